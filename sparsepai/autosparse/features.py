"""The AutoSparse predictor's input: each weight's initial features, normalised.

Features (``features`` selects the columns, in this order): ``"param"``, the initial weight, and
``"grad"``, the initial gradient, each divided by an RMS (``normalization``):

- ``"model"`` (default): the RMS of that feature over all prunable weights of the model. It
  removes the model's overall scale (initialisation, loss scale) but keeps the layers' relative
  scales, which tell the predictor how hard IRP prunes each layer (layers with small fan-in have
  large initial weights and survive more).
- ``"layer"``: the RMS over the weight's own layer (per-layer normalisation). Every layer then
  looks alike to the predictor, so its global threshold keeps about the same fraction of every
  layer: measured on LeNet-5 it collapses layers at 95% sparsity and above (see
  benchmarks/results/autosparse/README.md).

Both keep the sign and the zero of each feature; an all-zero scale leaves zeros.

Two layer-aware features are scale-free and never divided by an RMS (the predictor
sees one weight at a time, so without them it can only tell layers apart by their scale):

- ``"rank"``: the weight's position in its own layer ordered by ``|w|``, ``i / (n - 1)`` for the
  ``i``-th smallest (0 = smallest magnitude, 1 = largest; ties broken by flat index; a one-weight
  layer gets 1).
- ``"fanin"``: ``ln`` of the layer's fan-in, ``numel / shape[0]`` (the inputs of one output unit:
  ``in_features``, or ``in_channels / groups * kh * kw``), the same for every weight of a layer.
  With it the predictor can learn how hard IRP prunes a layer of that size.
"""

from __future__ import annotations

import math

import torch

FEATURES = ("param", "grad", "rank", "fanin")  # every valid feature
DEFAULT_FEATURES = ("param", "grad")
SCALED = ("param", "grad")  # the features divided by an RMS (``normalization``)
NORMALIZATIONS = ("model", "layer")
_NO_GRADS = ("the predictor uses the 'grad' feature: pass data to compute the initial "
             "gradients")


def _rms(x: torch.Tensor) -> float:
    return float(x.detach().double().pow(2).mean().sqrt()) if x.numel() else 0.0


def feature_scales(params: dict, grads: dict | None, names, features,
                   normalization: str = "model") -> dict:
    """The divisor of every feature of every layer: ``{feature: {name: rms}}``.

    ``"model"``: one RMS per feature over all the named weights; ``"layer"``: one per layer.
    Only the ``SCALED`` features have an entry."""
    out = {}
    for f in features:
        if f not in SCALED:
            continue
        src = params if f == "param" else grads
        if src is None:
            raise ValueError(_NO_GRADS)
        if normalization == "layer":
            out[f] = {n: _rms(src[n]) for n in names}
        elif normalization == "model":
            count = sum(src[n].numel() for n in names)
            total = sum(float(src[n].detach().double().pow(2).sum()) for n in names)
            rms = (total / count) ** 0.5 if count else 0.0
            out[f] = {n: rms for n in names}
        else:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got "
                             f"{normalization!r}")
    return out


def _magnitude_rank(param: torch.Tensor) -> torch.Tensor:
    """``i / (n - 1)`` for the ``i``-th smallest ``|w|`` (stable: ties by flat index)."""
    a = param.detach().reshape(-1).abs()
    n = a.numel()
    out = torch.empty(n, dtype=torch.float32)
    order = torch.sort(a, stable=True).indices
    out[order] = torch.arange(n, dtype=torch.float32) / max(n - 1, 1) if n > 1 else 1.0
    return out


def layer_features(param: torch.Tensor, grad: torch.Tensor | None, features,
                   scales: dict | None = None) -> torch.Tensor:
    """Normalised features of one layer's weights (see the module docstring).

    Args:
        param, grad: the layer's initial weights and gradients (grad may be None without the
            ``"grad"`` feature).
        features: the columns. scales: ``{feature: divisor}`` (from :func:`feature_scales`);
            None divides by the layer's own RMS. ``"rank"`` and ``"fanin"`` are never scaled.

    Shapes:
        ``param``, ``grad``: any shape (the same); returns ``(param.numel(), len(features))``
        float32, rows in the weight's flat (row-major) order.
    """
    cols = []
    for f in features:
        if f == "rank":
            cols.append(_magnitude_rank(param))
            continue
        if f == "fanin":
            fan_in = param.numel() // max(param.shape[0], 1) if param.dim() else 1
            cols.append(torch.full((param.numel(),), math.log(max(fan_in, 1))))
            continue
        x = param if f == "param" else grad
        if x is None:
            raise ValueError(_NO_GRADS)
        x = x.detach().reshape(-1).float()
        rms = _rms(x) if scales is None else scales[f]
        cols.append(x / rms if rms > 0 else x)
    return torch.stack(cols, 1)


def model_features(params: dict, grads: dict | None, names, features,
                   normalization: str = "model"):
    """``(name, features)`` for every named layer, normalised as configured (a generator: one
    layer's features in memory at a time)."""
    scales = feature_scales(params, grads, names, features, normalization)
    for n in names:
        yield n, layer_features(params[n], None if grads is None else grads.get(n), features,
                                {f: scales[f][n] for f in scales})
