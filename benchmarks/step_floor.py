"""The floor of a layer, and what it says of a training step: the caps of
``bench_sparse_train.py``'s training-step rows.

A layer's floor is the longer of its kept FLOPs at the dense GEMM rate and the activations any
implementation must read and write at the copy bandwidth (:func:`floor_seconds`). A training
step's caps put its convolution and linear layers at their floor and keep the rest of the step
(the dense step less those layers timed alone) as measured (:func:`step_caps`).
"""

from __future__ import annotations

import statistics
import time


def floor_seconds(flops: float, traffic: float, rates) -> float:
    """Seconds of ``flops`` at the GEMM rate or ``traffic`` bytes at the copy bandwidth
    (``rates = (FLOP/s, bytes/s)``), whichever is longer."""
    gemm, bw = rates
    return max(flops / gemm, traffic / bw)


def layer_io(model, x) -> dict:
    """``{name: (input shape, output shape, input needs a gradient)}`` of every ``Conv2d`` and
    ``Linear`` of ``model`` on one forward of ``x`` (eval mode, no gradients); the layer the
    data feed needs no input gradient in a training step."""
    import torch

    shapes, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            def hook(mod, inp, out, name=name):
                shapes[name] = (tuple(inp[0].shape), tuple(out.shape), inp[0] is not x)
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return shapes


def _per_output(out_shape) -> int:
    """Output positions per output channel (or feature)."""
    import math

    return math.prod(out_shape) // (out_shape[1] if len(out_shape) > 2 else out_shape[-1])


def masked_flops(model, masks, x):
    """``(dense, kept)`` forward FLOPs of the ``Conv2d``/``Linear`` layers of ``model`` on input
    ``x``: all their weights, and only those ``masks`` keep (an unmasked layer counts in full).
    ``kept / dense`` is a training step's compute floor relative to dense (the rest of the step
    aside)."""
    mods = dict(model.named_modules())
    dense = kept = 0.0
    for name, (_, out_shape, _) in layer_io(model, x).items():
        f = 2.0 * mods[name].weight.numel() * _per_output(out_shape)
        mk = masks.get(name + ".weight")
        dense += f
        kept += f * (float(mk.float().mean()) if mk is not None else 1.0)
    return dense, kept


def layer_floor_ms(module, in_shape, out_shape, density, igrad, rates):
    """The floor of one layer's forward + backward in a training step (the per-layer rows'
    rule): the kept FLOPs (forward, weight gradient, and the input gradient when ``igrad``) at
    the dense GEMM rate, or its activations (x and y forward; dy, x and, with ``igrad``, dx
    backward) at the copy bandwidth, whichever is longer."""
    import math

    out_elems = math.prod(out_shape)
    flops = (2 + igrad) * 2 * density * module.weight.numel() * _per_output(out_shape)
    traffic = 4 * ((2 + igrad) * math.prod(in_shape) + 2 * out_elems)
    return 1e3 * floor_seconds(flops, traffic, rates)


def step_layers(model, masks, x, rates, reps=5):
    """Every ``Conv2d``/``Linear`` of ``model`` in a training step on ``x``: ``{name: (dense ms,
    floor ms)}``. Each layer is timed alone, dense, forward + backward at its input shape in the
    step (median of ``reps``), without the input gradient where the step has none (the layer
    the data feed); the floor is :func:`layer_floor_ms` at its mask's density, at ``rates`` or
    the faster rates a dense layer of this step reached."""
    import torch

    shapes = layer_io(model, x)
    mods = dict(model.named_modules())
    dense = {}
    for name, (ins, outs, igrad) in shapes.items():
        m = mods[name]
        mk = masks.get(name + ".weight")
        density = float(mk.float().mean()) if mk is not None else 1.0
        xi = torch.randn(ins).requires_grad_(igrad)
        g = torch.randn(outs)
        times = []
        for r in range(reps + 1):
            m.zero_grad(set_to_none=True)
            xi.grad = None
            t0 = time.perf_counter()
            m(xi).backward(g)
            if r:
                times.append(time.perf_counter() - t0)
        dense[name] = (statistics.median(times), density)
    model.zero_grad(set_to_none=True)
    # the floor's rates are the fastest this run measured: a layer that ran dense faster than
    # the GEMM (or copy) measurement says is possible raises the rate, so no floor lies above
    # the dense layer that meets it
    gemm, bw = rates
    for name, (t, _) in dense.items():
        ins, outs, igrad = shapes[name]
        full = layer_floor_ms(mods[name], ins, outs, 1.0, igrad, (1.0, float("inf"))) / 1e3
        traffic = layer_floor_ms(mods[name], ins, outs, 0.0, igrad, (1.0, 1.0)) / 1e3
        gemm, bw = max(gemm, full / t), max(bw, traffic / t)
    return {name: (1e3 * t, layer_floor_ms(mods[name], *shapes[name][:2], d, shapes[name][2],
                                            (gemm, bw)))
            for name, (t, d) in dense.items()}


def step_caps(step_dense_ms, layers, swapped):
    """What the measured step says of its own speed-up: ``rest_ms`` (the step without its
    convolution and linear layers: the dense step less every layer timed alone), and the most
    the step could gain over dense with ``cap_swapped``: the layers ``sp.sparsify`` swapped at
    their floor, the others dense as now; ``cap_all``: every layer at its floor (any kernel,
    any layout; the rest of the step as it is)."""
    dense = sum(d for d, _ in layers.values())
    rest = max(step_dense_ms - dense, 0.0)
    swapped_at_floor = rest + sum(f if n in swapped else d for n, (d, f) in layers.items())
    all_at_floor = rest + sum(f for _, f in layers.values())
    return {"rest_ms": rest, "layers_dense_ms": dense,
            "cap_swapped": step_dense_ms / swapped_at_floor,
            "cap_all": step_dense_ms / all_at_floor}
