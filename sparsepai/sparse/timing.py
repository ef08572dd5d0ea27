"""The one timing rule :func:`sparsepai.sparse.sparsify` and the sparse layers' ``"auto"`` mode
decide by: median wall time of forward plus backward."""

from __future__ import annotations

import time

import torch


def time_fwd_bwd(fn, x: torch.Tensor, params, reps: int = 3) -> float:
    """Median seconds of ``fn(x)`` plus its backward (input and parameter gradients), after one
    warm-up call. The ``.grad`` of every tensor in ``params`` is left as it was."""
    params = list(params)
    saved = [p.grad for p in params]
    x = x.detach().requires_grad_(True)
    g = None
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        y = fn(x)
        if g is None:
            g = torch.randn_like(y)
        y.backward(g)
        if i:
            times.append(time.perf_counter() - t0)
    for p, gr in zip(params, saved):
        p.grad = gr
    times.sort()
    return times[len(times) // 2]
