"""Pure-PyTorch references of the masked optimizer ops (``sparsepai::masked_sgd_`` and
``sparsepai::masked_adamw_``): the fallback without the extension, and a readable statement of
what the kernels compute. Same arguments as the ops; float32 math, results stored in the
parameters' dtype (float64 parameters: float64 math); pruned entries of parameters and state set
to exact zeros."""

from __future__ import annotations

import torch

from sparsepai.optim.masks import unpack_mask


def _f(t):
    """The math dtype: float64 stays float64, everything else computes in float32."""
    return t.double() if t.dtype == torch.float64 else t.float()


def _keep(words, p):
    return None if words.numel() == 0 else unpack_mask(words, p.shape)


def _store(dst, value, keep):
    if keep is not None:
        value = torch.where(keep, value, torch.zeros((), dtype=value.dtype, device=value.device))
    dst.copy_(value)


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
            b = _f(momentum_buffers[i])
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
        bc2_sqrt = (1 - beta2**t) ** 0.5
        w = _f(p) * (1 - lr * weight_decay)
        m = _f(exp_avgs[i]).lerp(g, 1 - beta1)
        v = _f(exp_avg_sqs[i]) * beta2 + (1 - beta2) * g * g
        if amsgrad:
            vmax = torch.maximum(_f(max_exp_avg_sqs[i]), v)
            denom = vmax.sqrt() / bc2_sqrt + eps
            _store(max_exp_avg_sqs[i], vmax, keep)
        else:
            denom = v.sqrt() / bc2_sqrt + eps
        _store(exp_avgs[i], m, keep)
        _store(exp_avg_sqs[i], v, keep)
        _store(p, w - step_size * (m / denom), keep)
