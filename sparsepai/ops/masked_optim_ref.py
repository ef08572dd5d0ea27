"""Pure-PyTorch references of the masked optimizer ops (``sparsepai::masked_sgd_`` and
``sparsepai::masked_adamw_``): the fallback without the extension, and a readable statement of
what the kernels compute. Same arguments as the ops; float32 math, results stored in the
parameters' dtype (float64 parameters: float64 math); pruned entries of parameters and state set
to exact zeros. State tensors may be compact (1-D, the kept entries only, in index order), as the
optimizers store them for very sparse parameters on the CPU."""

from __future__ import annotations

import math

import torch

from sparsepai.ops.bits import unpack_mask


def _f(t):
    """The math dtype: float64 stays float64, everything else computes in float32."""
    return t.double() if t.dtype == torch.float64 else t.float()


def _keep(words, p):
    return None if words.numel() == 0 else unpack_mask(words, p.shape)


def _store(dst, value, keep):
    if keep is not None:
        if dst.numel() != value.numel():  # compact state: the kept entries, in index order
            dst.copy_(value.reshape(-1)[keep.reshape(-1)])
            return
        value = torch.where(keep, value, torch.zeros((), dtype=value.dtype, device=value.device))
    dst.copy_(value)


def _load(state, p, keep):
    """A state tensor in ``p``'s shape; compact state (1-D, kept entries only, the CPU layout
    for very sparse tensors) is expanded with zeros at the pruned entries."""
    if keep is None or state.numel() == p.numel():
        return _f(state)
    if state.numel() != int(keep.sum()):
        raise ValueError(f"compact state has {state.numel()} entries, the mask keeps "
                         f"{int(keep.sum())}")
    out = torch.zeros(p.shape, dtype=_f(state).dtype, device=state.device)
    out[keep] = _f(state)
    return out


@torch.no_grad()
def masked_sgd_ref(params, grads, momentum_buffers, masks, lr, momentum, dampening,
                   weight_decay, nesterov, maximize, is_first_step):
    for i, p in enumerate(params):
        keep = _keep(masks[i], p)
        g = _f(grads[i])
        w = _f(p)
        if maximize:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * w
        if momentum != 0:
            b = _load(momentum_buffers[i], p, keep)
            b = g.clone() if is_first_step else b * momentum + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
            _store(momentum_buffers[i], b, keep)
        _store(p, w - lr * g, keep)


@torch.no_grad()
def masked_adamw_ref(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, steps, lr,
                     beta1, beta2, weight_decay, eps, amsgrad, maximize):
    for i, p in enumerate(params):
        keep = _keep(masks[i], p)
        g = _f(grads[i])
        if maximize:
            g = -g
        t = steps[i]
        step_size = lr / (1 - beta1**t)
        bc2_sqrt_inv = 1.0 / math.sqrt(1 - beta2**t)  # the kernels' one-division form
        w = _f(p) * (1 - lr * weight_decay)
        m = _load(exp_avgs[i], p, keep).lerp(g, 1 - beta1)
        v = _load(exp_avg_sqs[i], p, keep) * beta2 + (1 - beta2) * g * g
        if amsgrad:
            vmax = torch.maximum(_load(max_exp_avg_sqs[i], p, keep), v)
            denom = vmax.sqrt() * bc2_sqrt_inv + eps
            _store(max_exp_avg_sqs[i], vmax, keep)
        else:
            denom = v.sqrt() * bc2_sqrt_inv + eps
        _store(exp_avgs[i], m, keep)
        _store(exp_avg_sqs[i], v, keep)
        _store(p, w - step_size * (m / denom), keep)
