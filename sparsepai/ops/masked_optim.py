"""Masked SGD / AdamW steps: ``masked_sgd_`` and ``masked_adamw_``.

The Python face of the ``sparsepai::masked_sgd_`` / ``masked_adamw_`` ops (schemas in
csrc/ops.cpp): fake implementations, and the choice through the dispatch table
(sparsepai/ops/dispatch.py) between the C++ CPU/CUDA kernels, the Triton kernels
(sparsepai/ops/masked_optim_triton.py) and the references (sparsepai/ops/masked_optim_ref.py).
``sparsepai.optim.MaskedSGD``/``MaskedAdamW`` call :func:`step_function` once per planned bucket
(tensors of one device and dtype) and the returned function at every step.

The kernels take float32, float16 and bfloat16 contiguous parameters; other calls run the
reference (or raise under a forced backend). Compact state (1-D, the kept entries only) is read
by the C++ CPU kernels and the references only: :func:`takes_compact_state`.
"""

from __future__ import annotations

import torch

from sparsepai._ext import has_extension
from sparsepai.ops import dispatch

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_COMPACT_BACKENDS = ("cpu", "reference")


def backend_for(op: str, params) -> str:
    """The backend that runs ``op`` (``"masked_sgd_"``/``"masked_adamw_"``) on ``params``
    (non-empty, one device and dtype)."""
    dev = params[0].device.type
    b = dispatch.backend(op, dev)
    if b == "reference":
        return b
    if params[0].dtype not in KERNEL_DTYPES:
        return dispatch.unsupported(op, dev, f"{params[0].dtype} parameters (the kernels take "
                                    "float32, float16 and bfloat16)")
    if not all(p.is_contiguous() for p in params):
        return dispatch.unsupported(op, dev, "non-contiguous parameters")
    return b


def step_function(op: str, params):
    """The function running ``op`` on ``params``, called with the op's schema arguments."""
    return dispatch.implementation(op, backend_for(op, params))


def takes_compact_state(p: torch.Tensor) -> bool:
    """Whether the step that updates ``p`` reads compact state (the backends of both ops
    agree on this)."""
    return backend_for("masked_sgd_", [p]) in _COMPACT_BACKENDS


def masked_sgd_(params, grads, momentum_buffers, masks, lr, momentum, dampening, weight_decay,
                nesterov, maximize, is_first_step) -> None:
    """One masked SGD step over ``params`` (one device and dtype): ``sparsepai::masked_sgd_``.

    Args: as the schema in csrc/ops.cpp (masks: int64 words, or empty tensors for unmasked
    parameters; momentum_buffers empty when momentum == 0).
    """
    if params:
        step_function("masked_sgd_", params)(params, grads, momentum_buffers, masks, lr,
                                             momentum, dampening, weight_decay, nesterov,
                                             maximize, is_first_step)


def masked_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, steps, lr,
                  beta1, beta2, weight_decay, eps, amsgrad, maximize) -> None:
    """One masked AdamW step over ``params``: ``sparsepai::masked_adamw_`` (``steps``: each
    tensor's step count after this step)."""
    if params:
        step_function("masked_adamw_", params)(params, grads, exp_avgs, exp_avg_sqs,
                                               max_exp_avg_sqs, masks, steps, lr, beta1, beta2,
                                               weight_decay, eps, amsgrad, maximize)


# The calls a step makes under torch.compile: opaque ops whatever the backend, so that Dynamo
# neither traces a Python implementation (the references index compact state by mask: data-
# dependent shapes) nor reads numbers out of tensors (``.tolist()`` breaks the graph, and a number
# passed on to a kernel is specialised: one recompilation per step count). Inside, the dispatch
# table's implementation runs eagerly.

@torch.library.custom_op("sparsepai::compiled_masked_sgd_",
                         mutates_args=("params", "momentum_buffers"))
def compiled_masked_sgd_(params: list[torch.Tensor], grads: list[torch.Tensor],
                         momentum_buffers: list[torch.Tensor], masks: list[torch.Tensor],
                         lr: float, momentum: float, dampening: float, weight_decay: float,
                         nesterov: bool, maximize: bool, is_first_step: bool) -> None:
    """:func:`masked_sgd_` as one opaque op: how a step under ``torch.compile`` calls it."""
    masked_sgd_(params, grads, momentum_buffers, masks, lr, momentum, dampening, weight_decay,
                nesterov, maximize, is_first_step)


@compiled_masked_sgd_.register_fake
def _(params, grads, momentum_buffers, masks, lr, momentum, dampening, weight_decay, nesterov,
      maximize, is_first_step):
    return None


@torch.library.custom_op("sparsepai::compiled_masked_adamw_",
                         mutates_args=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"))
def compiled_masked_adamw_(params: list[torch.Tensor], grads: list[torch.Tensor],
                           exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                           max_exp_avg_sqs: list[torch.Tensor], masks: list[torch.Tensor],
                           steps: list[torch.Tensor], lr: float, beta1: float, beta2: float,
                           weight_decay: float, eps: float, amsgrad: bool,
                           maximize: bool) -> None:
    """:func:`masked_adamw_` as one opaque op, with the step counts as the 0-d
    ``state["step"]`` tensors (already counting this step), read inside: how a step under
    ``torch.compile`` calls it."""
    masked_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks,
                  [float(t) for t in steps], lr, beta1, beta2, weight_decay, eps, amsgrad,
                  maximize)


@compiled_masked_adamw_.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, steps, lr, beta1, beta2,
      weight_decay, eps, amsgrad, maximize):
    return None


def _register_fakes():
    """The ops mutate their arguments in place and return nothing: so do their fakes."""
    if not has_extension() or not hasattr(torch.ops.sparsepai, "masked_sgd_"):
        return

    @torch.library.register_fake("sparsepai::masked_sgd_")
    def _(params, grads, momentum_buffers, masks, lr, momentum, dampening, weight_decay,
          nesterov, maximize, is_first_step):
        return None

    @torch.library.register_fake("sparsepai::masked_adamw_")
    def _(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, steps, lr, beta1, beta2,
          weight_decay, eps, amsgrad, maximize):
        return None


_register_fakes()
