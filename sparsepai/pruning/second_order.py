"""A context in which a model can be differentiated twice, for GraSP's Hessian-gradient product
and ProsPr's meta-gradient (https://arxiv.org/abs/2202.08132).

Some of PyTorch's kernels have a backward that has no derivative of its own:
- the fused attention kernels (flash, memory-efficient) of ``scaled_dot_product_attention``:
  the math kernel is picked instead;
- ``hardsigmoid`` (the gate of MobileNetV3's and many timm models' squeeze-and-excitation):
  ``aten::hardsigmoid_backward`` is not differentiable, so while the context is active
  ``F.hardsigmoid`` is computed from ops that are. The substitute has the same value up to
  rounding and the same gradient, zero at +-3 included (the kernel's gradient is nonzero only
  strictly inside (-3, 3)).

Nothing outside the context changes: a user's model runs its own kernels again afterwards.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_SIXTH = 1.0 / 6.0


def hardsigmoid_twice(x: torch.Tensor) -> torch.Tensor:
    """``F.hardsigmoid(x)`` from twice-differentiable ops: 0 at and below -3, 1 at and above
    3, ``(x + 3) / 6`` between (NaN stays NaN); its gradient is ``1/6`` strictly inside
    (-3, 3), else 0, as the kernel's.

    Shapes: any; the result has ``x``'s shape and dtype."""
    return torch.where(x >= 3, 1.0, torch.where(x <= -3, 0.0, (x + 3) * _SIXTH))


class _TwiceDifferentiable(TorchFunctionMode):
    """Routes the functions whose backward has no derivative to :func:`hardsigmoid_twice` and
    the like (see the module's docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.hardsigmoid:
            x = args[0] if args else kwargs["input"]
            inplace = kwargs.get("inplace", args[1] if len(args) > 1 else False)
            with torch._C.DisableTorchFunction():
                y = hardsigmoid_twice(x)
                return x.copy_(y) if inplace else y
        return func(*args, **kwargs)


def second_order():
    """The context (see the module's docstring): math attention and a twice-differentiable
    ``hardsigmoid``.

    Returns:
        a context manager; nothing is changed once it exits."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = contextlib.ExitStack()
    stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
    stack.enter_context(_TwiceDifferentiable())
    return stack
