"""Whether an optimization's gradient is still of use: one rule for every loop (Fourier / MACO / pixels, Yosinski).

A gradient ascent on the input stops being able to move the image in two ways that a user
must be told about, not shown as a flat or noisy picture:

* the objective or its gradient becomes **NaN or infinite** (an overflow in a custom layer, a
  ``log`` of zero, a division by a norm that vanished): the step is not taken, the run ends and
  keeps the images of the step before;
* the objective has **no gradient at all** with respect to the image (the model computes it under
  ``torch.no_grad``, detaches the input, returns an ``argmax``): :func:`no_gradient`, raised before
  the first step;
* the gradient is **exactly zero everywhere** for :data:`ZERO_PATIENCE` steps in a row (a dead
  unit, or a ``round`` / ``argmax`` / threshold between the image and the unit): the image cannot
  change, so the run ends with the images it has.

:class:`GradientWatch` says which, in one line that names the steps, for
:attr:`~cnnvis_gui.optvis.render.RenderResult.problem`.
"""
from __future__ import annotations

import torch

from ..core import CnnvisError

__all__ = ["ZERO_PATIENCE", "GradientWatch", "no_gradient"]

#: steps in a row with a gradient of exactly zero everywhere before a run gives up
ZERO_PATIENCE = 8


class GradientWatch:
    """Counts zero-gradient steps and spots non-finite values; each check returns a problem line or None.

    Usage, in a loop over steps ``it = 1, 2, ...``::

        watch = GradientWatch()
        problem = watch.nonfinite(it, values, grads)   # before the step: None, or why it stops here
        ...                                             # keep the image of this step
        problem = watch.zero(it, grads)                # after keeping it: None, or why it stops now
    """

    def __init__(self, patience: int = ZERO_PATIENCE):
        self.patience = int(patience)
        self.zero_steps = 0

    def nonfinite(self, it: int, values: torch.Tensor, grads) -> str | None:
        """Why step ``it`` is not taken (its objective ``values`` or a gradient is NaN / infinite), or None."""
        if bool(torch.isfinite(values).all()):
            if all(bool(torch.isfinite(g).all()) for g in grads):
                return None
            what = "gradient"
        else:
            what = "objective"
        if it > 1:
            return (f"the {what} became NaN or infinite at step {it}: stopped there, keeping the images of "
                    f"step {it - 1}")
        return (f"the {what} is NaN or infinite from the first step: the model gives no usable gradient for "
                f"this objective (the image shown is the random start)")

    def zero(self, it: int, grads) -> str | None:
        """Why the run stops after step ``it`` (the gradient was zero everywhere ``patience`` steps in a row), or None."""
        self.zero_steps = self.zero_steps + 1 if all(not bool(g.any()) for g in grads) else 0
        if self.zero_steps < self.patience:
            return None
        return (f"the gradient is zero everywhere for {self.zero_steps} steps in a row (steps "
                f"{it - self.zero_steps + 1}-{it}): the objective does not respond to the image (a dead unit, or "
                f"a step such as round/argmax before it); stopped")


def no_gradient(objective_text: str) -> CnnvisError:
    """The one-line error for an objective whose value does not depend on the image through autograd."""
    return CnnvisError(f"cannot take a gradient of {objective_text!r}: its value does not depend on the image "
                       f"through autograd (the model computes that layer without gradients: torch.no_grad, "
                       f".detach(), an integer op); choose another layer.")
