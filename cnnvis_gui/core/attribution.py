"""Integrated gradients, input x gradient and SmoothGrad on top of a recorded frame.

These methods are built from the engine's public gradient (:meth:`Frame.saliency` with the
``"gradient"``, ``"deconvnet"`` or ``"guided"`` rule); they only decide *where* the gradient
is taken and how the gradients are combined:

* ``input-x-gradient`` -- Shrikumar et al. 2016, "Not Just a Black Box: Learning Important
  Features Through Propagating Activation Differences": ``x * dS/dx``.  Answered from the
  recorded frame (no new forward).
* ``integrated-gradients`` -- Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep
  Networks": ``(x - x') * integral_0^1 dS/dx(x' + a (x - x')) da`` with baseline ``x'`` (zeros
  by default).  The integral uses ``steps`` Gauss-Legendre points on [0, 1], the rule captum's
  ``IntegratedGradients`` uses by default, so the two agree to float32 rounding.
* SmoothGrad -- Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise": any of the
  methods above (or a backprop rule) averaged over ``smoothgrad`` copies of the input with
  Gaussian noise of standard deviation ``noise * (max(x) - min(x))`` (per sample).

Every extra forward is *batched*: the scaled / noisy copies of the frame's input go through the
model :data:`COPIES_PER_FORWARD` at a time as one batch, each with one backward.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from .errors import CnnvisError

ATTRIBUTION_METHODS = ("input-x-gradient", "integrated-gradients")
RULE_METHODS = ("gradient", "deconvnet", "guided")   # the engine's backprop rules (engine.METHODS)
COPIES_PER_FORWARD = 8     # copies of the input per batched forward (memory stays bounded)
DEFAULT_NOISE = 0.15       # SmoothGrad's std as a fraction of the input's range (the paper suggests 10-20%)
DEFAULT_STEPS = 32         # integrated-gradients points
MAX_SMOOTHGRAD = 1024
MAX_STEPS = 1024

__all__ = ["ATTRIBUTION_METHODS", "COPIES_PER_FORWARD", "DEFAULT_NOISE", "DEFAULT_STEPS", "gauss_legendre", "attribute",
           "check_options"]


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``a_i`` in (0, 1) and weights ``w_i`` (summing to 1) of the ``steps``-point rule.

    The same quadrature as captum's ``IntegratedGradients(method="gausslegendre")``:
    numpy's Legendre nodes on [-1, 1] mapped to [0, 1].
    """
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    return 0.5 * (nodes + 1.0), 0.5 * weights


def check_options(smoothgrad: int = 0, noise: float = DEFAULT_NOISE, steps: int = DEFAULT_STEPS, seed=None) -> None:
    """Raise a :class:`CnnvisError` naming the first bad SmoothGrad / integrated-gradients option."""
    if isinstance(smoothgrad, bool) or not isinstance(smoothgrad, numbers.Integral) or not \
            0 <= smoothgrad <= MAX_SMOOTHGRAD:
        raise CnnvisError(f"smoothgrad is the number of noisy copies, an integer in 0..{MAX_SMOOTHGRAD} "
                          f"(0: off); got {smoothgrad!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not math.isfinite(noise) or noise < 0:
        raise CnnvisError(f"noise is the SmoothGrad noise level (std as a fraction of the input's range), "
                          f"a number >= 0 such as 0.15; got {noise!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= MAX_STEPS:
        raise CnnvisError(f"steps is the number of integrated-gradients points, an integer in 1..{MAX_STEPS}; "
                          f"got {steps!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise CnnvisError(f"seed must be an integer or None, got {seed!r}")


def _baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, np.ndarray):
        baseline = torch.from_numpy(baseline)
    if not isinstance(baseline, torch.Tensor) or not baseline.is_floating_point():
        raise CnnvisError(f"baseline must be None (zeros), a number or a float tensor shaped like the "
                          f"input; got {type(baseline).__name__}")
    try:
        return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape).clone()
    except RuntimeError:
        raise CnnvisError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to the input's "
                          f"{tuple(x.shape)}") from None


class _NoisyCopies:
    """Copy ``s`` of the input with SmoothGrad noise, drawn in order, one copy at a time.

    Copy s is ``x + sigma * e_s``, ``e_s`` the s-th ``torch.randn(x.shape)`` draw of a CPU
    generator seeded with ``seed`` (random when None), ``sigma = level * (max - min)`` of each
    sample; without noise every copy is ``x``.  Only the copies still in use are kept, so memory
    does not grow with the number of copies.
    """

    def __init__(self, x: torch.Tensor, level: float, seed):
        self.x = x
        self.gen = None
        if level > 0:
            self.gen = torch.Generator(device="cpu")
            if seed is None:
                self.gen.seed()
            else:
                self.gen.manual_seed(int(seed))
            flat = x.reshape(x.shape[0], -1)
            self.sigma = (level * (flat.amax(dim=1) - flat.amin(dim=1))).reshape((-1,) + (1,) * (x.ndim - 1))
        self.kept: dict = {}
        self.drawn = 0

    def __getitem__(self, s: int) -> torch.Tensor:
        if self.gen is None:
            return self.x
        while self.drawn <= s:
            e = torch.randn(tuple(self.x.shape), generator=self.gen, dtype=torch.float32)
            self.kept[self.drawn] = self.x + e.to(device=self.x.device, dtype=self.x.dtype) * self.sigma
            self.drawn += 1
        return self.kept[s]

    def release(self, s: int) -> None:
        self.kept.pop(s, None)


def _batched_gradients(frame, make_copies, copies: int, layer, unit, rule, objective, call):
    """Yield ``(start, grads)`` for copies ``start..start+k`` of the frame's N samples.

    ``make_copies(i0, i1)`` returns the inputs of copies i0..i1 as a (i1-i0) x N x ... tensor;
    each chunk is one batched forward (:meth:`Visualizer.forward`) and one backward under
    ``rule``, whose per-sample gradients come back as (i1-i0) x N x ....
    """
    vis = frame.visualizer
    if vis is None:
        raise CnnvisError("this frame was not recorded by a Visualizer; it cannot run extra forwards.")
    n = frame.input.shape[0]
    per = max(1, COPIES_PER_FORWARD // n)
    for i0 in range(0, copies, per):
        i1 = min(copies, i0 + per)
        xs = make_copies(i0, i1)
        # only the layer asked for is recorded: every other module call keeps the hook-free fast path
        with vis.forward(xs.reshape((-1,) + tuple(xs.shape[2:])), layers=[layer]) as f:
            g = f.saliency(layer, unit, rule, objective, call)
        yield i0, g.reshape(xs.shape)


def attribute(frame, layer: str, unit: int, method: str, objective="sum", call: int = -1, *,
              smoothgrad: int = 0, noise: float = DEFAULT_NOISE, steps: int = DEFAULT_STEPS, baseline=None,
              seed: int | None = None) -> torch.Tensor:
    """Attribution of the unit's objective to the frame's input, shaped like the input.

    Parameters
    ----------
    frame : Frame
        A recorded forward (:meth:`Visualizer.forward`); ``frame.input`` is N x C x H x W.
    method : str
        ``"gradient"``, ``"deconvnet"``, ``"guided"`` (the engine's rules),
        ``"input-x-gradient"`` or ``"integrated-gradients"``.
    smoothgrad : int
        Number of noisy copies to average (0: off).  ``noise=0`` gives the plain method exactly.
    noise : float
        SmoothGrad's noise level: std = ``noise * (max(x) - min(x))`` per sample.
    steps : int
        Integrated-gradients quadrature points (Gauss-Legendre, as captum's default).
    baseline : None, float or tensor
        Integrated gradients' reference input ``x'`` (default zeros), broadcast to the input.
    seed : int, optional
        Seed of SmoothGrad's noise; the same seed gives the same result.
    """
    if method not in RULE_METHODS + ATTRIBUTION_METHODS:
        raise CnnvisError(f"unknown method {method!r}; choose one of "
                          f"{', '.join(RULE_METHODS + ATTRIBUTION_METHODS)}.")
    check_options(smoothgrad, noise, steps, seed)
    x = frame.input
    # the gradient at the unit's own layer is a backward through one op: it checks layer, call,
    # unit and objective with the engine's own messages before any extra forward runs
    frame.gradient_at(layer, layer, unit, "gradient", objective, call, at_call=call)
    smooth = smoothgrad > 0 and noise > 0

    if not smooth:
        if method in RULE_METHODS:
            return frame.saliency(layer, unit, method, objective, call)
        if method == "input-x-gradient":
            return x * frame.saliency(layer, unit, "gradient", objective, call)

    S = smoothgrad if smooth else 1
    copies = _NoisyCopies(x, float(noise) if smooth else 0.0, seed)

    if method != "integrated-gradients":
        rule = "gradient" if method == "input-x-gradient" else method
        total = torch.zeros_like(x)

        def make(i0, i1):
            return torch.stack([copies[s] for s in range(i0, i1)])

        for i0, g in _batched_gradients(frame, make, S, layer, unit, rule, objective, call):
            for j in range(g.shape[0]):
                total += g[j] * copies[i0 + j] if method == "input-x-gradient" else g[j]
                copies.release(i0 + j)
        return total / S

    # integrated gradients, possibly inside SmoothGrad: copy c = s * K + k is point a_k on the
    # path from the baseline to noisy copy s; path[s] collects sum_k w_k grad_k as captum does
    b = _baseline(baseline, x)
    alphas, weights = gauss_legendre(steps)
    K = len(alphas)

    def make(i0, i1):
        return torch.stack([b + float(alphas[c % K]) * (copies[c // K] - b) for c in range(i0, i1)])

    # in the input's dtype from float64: rounded through float32 first, a float64 model's answer was 3e-8 off
    weight_t = torch.as_tensor(weights, dtype=x.dtype).to(x.device)
    total = torch.zeros_like(x)
    path: dict = {}
    for i0, g in _batched_gradients(frame, make, S * K, layer, unit, "gradient", objective, call):
        for j in range(g.shape[0]):
            s_, k = divmod(i0 + j, K)
            path[s_] = path.get(s_, 0) + g[j] * weight_t[k]
            if k == K - 1:
                total += path.pop(s_) * (copies[s_] - b)
                copies.release(s_)
    return total / S
