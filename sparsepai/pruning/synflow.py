"""SynFlow (Tanaka et al., NeurIPS 2020, https://arxiv.org/abs/2006.05467): data-free iterative
synaptic flow pruning. The score of a weight is |w * dR/dw| for R the sum of the outputs of the
linearised network on an all-ones input; pruning runs over ``rounds`` rounds with an exponential
schedule.

The linearised network is the model with |w| for every parameter and buffer, in float64 and eval
mode (batch norm then applies its running statistics: at initialization an affine map). Two
choices make this work on any model, transformers included:

- **The all-ones input lives where the first continuous layer reads.** Float inputs are ones;
  integer inputs (token ids, attention masks) keep the values of one example sample, and every
  ``nn.Embedding`` outputs ones instead of looking them up: the all-ones vector in embedding
  space. Floats never reach an embedding, and the ids do not matter (embedding tables are not
  pruned; their outputs are the constant input).
- **Centring normalisations keep only their affine part** (layer, group and instance norm:
  ``x * |weight| + |bias|``), as batch norm does in eval mode at its initial statistics (mean 0,
  variance 1). Normalising maps the constant all-ones input to zero, which would cut every path
  through the layer and leave no flow to score; SynFlow's conservation argument needs layers
  homogeneous of degree one, which normalisation is not. RMS norms are left as they are (they
  keep a constant input constant).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from sparsepai.core.iterative import Rounds, exponential
from sparsepai.core.model import model_logits, take_batches
from sparsepai.core.options import option
from sparsepai.core.registry import register


@dataclasses.dataclass(frozen=True)
class SynflowConfig:
    """Args: rounds: pruning rounds (the paper's 100); input_shape: the shape of one float
    input sample, e.g. (3, 32, 32); example_inputs: an example of the model's inputs (a tensor,
    tuple or dict, e.g. token ids) whose structure, shapes and integer values are used. Without
    either, the first batch of data is the example."""

    rounds: int = option(100, at_least=1)
    input_shape: tuple | None = None
    example_inputs: object = None


def _arg(args, kwargs, i, name):
    return args[i] if len(args) > i else kwargs.get(name)


def _affine(x, weight, bias, channel_dim):
    """``x * weight + bias``, the parameters along ``channel_dim`` (None: the trailing
    dimensions, as layer norm's)."""
    def shaped(t):
        if channel_dim is None:
            return t
        return t.view([-1 if d == channel_dim else 1 for d in range(x.dim())])

    if weight is not None:
        x = x * shaped(weight)
    if bias is not None:
        x = x + shaped(bias)
    return x


class _AffineNorms(TorchFunctionMode):
    """Layer, group and instance norm reduced to their affine part (see the module docstring).
    Layer norm's weight covers the trailing dimensions (broadcast as is); group and instance
    norm's cover dimension 1."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.layer_norm, torch.layer_norm):
            return _affine(args[0] if args else kwargs["input"], _arg(args, kwargs, 2, "weight"),
                           _arg(args, kwargs, 3, "bias"), None)
        if func in (F.group_norm, torch.group_norm):
            return _affine(args[0] if args else kwargs["input"], _arg(args, kwargs, 2, "weight"),
                           _arg(args, kwargs, 3, "bias"), 1)
        if func is F.instance_norm:
            return _affine(args[0] if args else kwargs["input"], _arg(args, kwargs, 3, "weight"),
                           _arg(args, kwargs, 4, "bias"), 1)
        return func(*args, **kwargs)


def _ones_like_inputs(inputs, device):
    """The data-free input: ones for float tensors (batch of one), one sample of the integer
    ones."""
    if isinstance(inputs, torch.Tensor):
        if inputs.is_floating_point() or inputs.is_complex():
            return torch.ones((1,) + tuple(inputs.shape[1:]), dtype=torch.float64, device=device)
        return inputs[:1].to(device)
    if isinstance(inputs, Mapping):
        return {k: _ones_like_inputs(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_ones_like_inputs(v, device) for v in inputs)
    return inputs


def synflow_inputs(data, cfg: SynflowConfig, device):
    """What the linearised network runs on (see the module docstring)."""
    if cfg.input_shape is not None:
        return torch.ones((1,) + tuple(cfg.input_shape), dtype=torch.float64, device=device)
    if cfg.example_inputs is not None:
        example = cfg.example_inputs
    elif data is not None:
        example = take_batches(data, 1, "synflow")[0][0]
    else:
        raise ValueError("method 'synflow' needs input_shape=..., example_inputs=... or data to "
                         "read the input's shape from")
    return _ones_like_inputs(example, device)


def _embedding_ones(module, inputs, output):
    return torch.ones_like(output)


@register("synflow", SynflowConfig, iterative=True)
def synflow_schedule(model, names, data, loss_fn, cfg: SynflowConfig) -> Rounds:
    model.double().eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    original = [w.detach().clone() for w in weights]
    inputs = synflow_inputs(data, cfg, weights[0].device)
    for m in model.modules():
        if isinstance(m, torch.nn.Embedding):
            m.register_forward_hook(_embedding_ones)  # the model is a private copy

    def saliency(masks):
        with torch.no_grad():
            for n, w, w0 in zip(names, weights, original):
                w.copy_(w0 if masks is None else w0 * masks[n])
        with _AffineNorms():
            r = model_logits(model, inputs).sum()
        grads = torch.autograd.grad(r, weights, materialize_grads=True)
        return {n: (g * w).detach() for n, g, w in zip(names, grads, weights)}

    return Rounds(exponential(cfg.rounds), saliency)
