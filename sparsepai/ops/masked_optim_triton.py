"""The masked SGD / AdamW updates as Triton kernels (same arguments and results as the
``sparsepai::masked_sgd_`` / ``masked_adamw_`` ops and their references): the CUDA backend of a
build without the C++ CUDA kernels (sparsepai/ops/dispatch.py). On the CPU they run under
``TRITON_INTERPRET=1`` (how the tests check them through ``sp.optim``). Kept elements get torch's
update in float32; pruned ones are not touched, like the C++ kernels (the optimizer zeroes them
when it takes the masks). Parameters must be contiguous and state in their shape (no compact
state)."""

from __future__ import annotations

import math

from sparsepai.ops._triton import has_triton, require_triton

BLOCK = 1024

if has_triton():
    import triton
    import triton.language as tl

    @triton.jit
    def _keep_mask(w_ptr, offs, valid, HAS_MASK: tl.constexpr):
        if HAS_MASK:
            words = tl.load(w_ptr + (offs >> 6), mask=valid, other=0)
            # arithmetic shifts of negative words only fill bits that & 1 drops
            return valid & (((words >> (offs & 63)) & 1) != 0)
        return valid

    @triton.jit
    def _masked_sgd_kernel(p_ptr, g_ptr, b_ptr, w_ptr, n, lr, sign, wd, buf_keep, grad_gain,
                           nest_b, HAS_MASK: tl.constexpr, MOMENTUM: tl.constexpr,
                           NESTEROV: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        keep = _keep_mask(w_ptr, offs, offs < n, HAS_MASK)
        p = tl.load(p_ptr + offs, mask=keep, other=0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=keep, other=0).to(tl.float32)
        g = sign * g
        g = g + wd * p
        if MOMENTUM:
            b = tl.load(b_ptr + offs, mask=keep, other=0).to(tl.float32)
            b = buf_keep * b + grad_gain * g
            if NESTEROV:
                g = g + nest_b * b
            else:
                g = b
            tl.store(b_ptr + offs, b.to(b_ptr.dtype.element_ty), mask=keep)
        p = p - lr * g
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=keep)

    @triton.jit
    def _masked_adamw_kernel(p_ptr, g_ptr, m_ptr, v_ptr, x_ptr, w_ptr, n, sign, decay, step_size,
                             bc2_sqrt_inv, beta1, beta2, eps, HAS_MASK: tl.constexpr,
                             AMSGRAD: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        keep = _keep_mask(w_ptr, offs, offs < n, HAS_MASK)
        p = tl.load(p_ptr + offs, mask=keep, other=0).to(tl.float32)
        g = sign * tl.load(g_ptr + offs, mask=keep, other=0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=keep, other=0).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=keep, other=0).to(tl.float32)
        p = p * decay
        m = m + (1.0 - beta1) * (g - m)
        v = beta2 * v + (1.0 - beta2) * (g * g)
        vv = v
        if AMSGRAD:
            x = tl.maximum(tl.load(x_ptr + offs, mask=keep, other=0).to(tl.float32), v)
            tl.store(x_ptr + offs, x.to(x_ptr.dtype.element_ty), mask=keep)
            vv = x
        denom = tl.sqrt(vv) * bc2_sqrt_inv + eps
        p = p - step_size * (m / denom)
        tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=keep)
        tl.store(v_ptr + offs, v.to(v_ptr.dtype.element_ty), mask=keep)
        tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=keep)


def masked_sgd_triton(params, grads, momentum_buffers, masks, lr, momentum, dampening,
                      weight_decay, nesterov, maximize, is_first_step):
    require_triton()
    for i, p in enumerate(params):
        n = p.numel()
        if n == 0:
            continue
        has_mask = masks[i].numel() > 0
        mom = momentum != 0
        buf = momentum_buffers[i] if mom else p  # unused when not MOMENTUM
        _masked_sgd_kernel[(triton.cdiv(n, BLOCK),)](
            p, grads[i].contiguous(), buf, masks[i] if has_mask else p, n, lr,
            -1.0 if maximize else 1.0, weight_decay,
            0.0 if is_first_step else momentum, 1.0 if is_first_step else 1.0 - dampening,
            momentum, HAS_MASK=has_mask, MOMENTUM=mom, NESTEROV=bool(nesterov), BLOCK=BLOCK)


def masked_adamw_triton(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, masks, steps, lr,
                        beta1, beta2, weight_decay, eps, amsgrad, maximize):
    require_triton()
    for i, p in enumerate(params):
        n = p.numel()
        if n == 0:
            continue
        t = steps[i]
        has_mask = masks[i].numel() > 0
        _masked_adamw_kernel[(triton.cdiv(n, BLOCK),)](
            p, grads[i].contiguous(), exp_avgs[i], exp_avg_sqs[i],
            max_exp_avg_sqs[i] if amsgrad else p, masks[i] if has_mask else p, n,
            -1.0 if maximize else 1.0, 1.0 - lr * weight_decay, lr / (1 - beta1**t),
            1.0 / math.sqrt(1 - beta2**t), beta1, beta2, eps,
            HAS_MASK=has_mask, AMSGRAD=bool(amsgrad), BLOCK=BLOCK)
