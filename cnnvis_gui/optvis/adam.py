"""Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", ICLR), on plain tensors.

The update of ``torch.optim.Adam`` with its defaults (betas 0.9 / 0.999, eps 1e-8, no weight
decay), written out: ``torch.optim``'s constructor imports ``torch._dynamo``, which takes
seconds on first use (the first optimized image of a session, in the window or the command
line, waited for it); this is a dozen tensor operations a step.  The test checks it step for
step against ``torch.optim.Adam``.
"""
from __future__ import annotations

import torch

__all__ = ["Adam"]


class Adam:
    """``step(grads)`` moves each parameter (in place) by Adam's bias-corrected update of ``grads``; it ascends
    when given the negated gradient of what is maximized, like any minimizer."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, self.eps = float(lr), float(eps)
        self.b1, self.b2 = (float(b) for b in betas)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads) -> None:
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.mul_(self.b1).add_(g, alpha=1.0 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            denom = (v / c2).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / c1)
