"""``sp.slim``: a physically smaller copy of a channel-masked model.

Every convolution, linear, norm and depthwise layer (and per-channel parameter) that a channel
mask touches is narrowed in place on a deep copy, keeping its class (so subclasses such as
same-padding convolutions or norm-activation layers keep their forward): grouped convolutions
lose the same channels in every group (or whole groups), attention projections whole heads (and the attention module's head counts
are updated). A coupled residual stream keeps the channels
any of its producers keeps; a producer that keeps fewer writes into the stream through a
channel-sparse convolution (``sparsepai.ops.channel_sparse_conv2d``), and the norm after it
keeps the stream's width with the affine parameters of its dropped channels at zero, which is
exactly what the masked dense model computes. The model's own class and ``forward`` are kept
(modules are swapped in place on a deep copy), so the slim model is an ordinary module that any
``torch.optim`` optimizer trains and ``torch.export`` exports.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sparsepai import _io
from sparsepai.structured.analysis import analyse
from sparsepai.structured.channels import resolve
from sparsepai.structured.narrow import _idx, _retie, _tied, narrow_model

SLIM_ATTR = "sparsepai_channel_masks"
FORMAT = "sparsepai.slim/1"


def round_masks(graph, plan, multiple: int) -> dict:
    """Channel masks whose stream widths are multiples of ``multiple``: the lowest-numbered
    dropped channels of each stream are kept again (in every producer that kept the whole
    stream), with their original weights."""
    masks = {n: m.clone() for n, m in plan.own.items()}
    for g in graph.prunable_groups():
        live = plan.live[g.id]
        want = min(g.size, -(-int(live.sum()) // multiple) * multiple)
        extra = _idx(~live)[: want - int(live.sum())]
        for p in g.producers:
            if torch.equal(plan.own[p], live):
                masks[p][extra] = True
    return {n: graph.groups[graph.producer_group[n]].spread(n, m) for n, m in masks.items()}


@torch.no_grad()
def slim(model: nn.Module, channel_masks: dict, *, round_to: int = 1,
         example_inputs=None, norm_streams: bool | None = None) -> nn.Module:
    """A physically smaller copy of ``model`` with the pruned channels removed.

    Args:
        model: the dense model (left untouched). Its weights need not be masked: the slim
            model equals ``sp.apply_masks(copy_of_model, channel_masks)``.
        channel_masks: ``{module name: bool (out_channels,)}`` as ``sp.prune(...,
            structured=True)`` returns; missing modules keep every channel.
        round_to: round each stream's channel count up to a multiple of this (e.g. 8) by
            keeping some dropped channels (the lowest-numbered) with their weights; the masks
            actually used are recorded on the result.
        example_inputs: an input to capture the model on (a tensor, a tuple of positional
            arguments or a dict of keyword arguments); by default the graph ``sp.prune`` built
            for this architecture is reused (see :func:`~sparsepai.structured.analysis.analyse`).
        norm_streams: as ``sp.prune``'s option (None: as the reused graph was built). With
            it, channels under a layer or group norm are removed and the norm normalises the
            kept channels only: the slim model then approximates the masked dense model
            instead of equalling it.

    Returns:
        A deep copy of ``model`` with smaller layers; ``result.sparsepai_channel_masks`` holds
        the masks it implements. In train and eval mode it computes what the masked dense model
        computes (to float32 rounding), unless built with ``norm_streams``.

    Raises:
        ValueError/TypeError: masks that do not match the model, or that remove every channel of
            a layer; ``TraceError`` when the model cannot be captured.
    """
    graph = analyse(model, example_inputs, norm_streams)
    plan = resolve(graph, dict(channel_masks), "slim")
    if round_to < 1:
        raise ValueError(f"slim: round_to must be >= 1, got {round_to}")
    if round_to > 1:
        plan = resolve(graph, round_masks(graph, plan, round_to), "slim")
    new = copy.deepcopy(model)
    tied = _tied(new)
    narrow_model(new, graph, plan)
    _retie(new, tied)
    setattr(new, SLIM_ATTR, {n: plan.rows(n) for n, m in plan.own.items()
                             if not bool(m.all()) or n in channel_masks})
    return new


def save_slim(model: nn.Module, path: str) -> None:
    """Save a slim model: its state_dict and the channel masks that rebuild its structure from
    the dense architecture, in one safetensors file (no pickle), written atomically.

    Args:
        model: a model returned by :func:`slim`.
        path: the ``.safetensors`` file to write (missing folders are created).
    """
    masks = getattr(model, SLIM_ATTR, None)
    if masks is None:
        raise ValueError("save_slim: the model was not made by sp.slim (no channel masks)")
    tensors = {f"state.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"mask.{k}": v.to(torch.uint8) for k, v in masks.items()})
    _io.save_tensors(path, tensors, {"format": FORMAT, "model_class": type(model).__name__,
                                     "masks": sorted(masks)})


def load_slim(path: str, model: nn.Module, example_inputs=None) -> nn.Module:
    """Rebuild a slim model saved by :func:`save_slim`.

    Args:
        path: the file.
        model: a dense model of the same architecture (e.g. freshly constructed); untouched.
        example_inputs: as for :func:`slim`.

    Returns:
        The slim model with the saved weights.

    Raises:
        FileNotFoundError: no such file. ValueError: a truncated, corrupt or non-safetensors
            file, not a slim model, or one of another architecture; naming ``path``.
    """
    tensors, meta = _io.read_tensors(path, "slim model")
    if meta.get("format") != FORMAT:
        raise ValueError(f"load_slim: {path} is not a sparsepai slim model (format "
                         f"{meta.get('format')!r}, expected {FORMAT!r})")
    if meta.get("model_class") != type(model).__name__:
        raise ValueError(f"load_slim: {path} holds a slim {meta.get('model_class')}, the "
                         f"model given is a {type(model).__name__}")
    masks = {k[5:]: v.bool() for k, v in tensors.items() if k.startswith("mask.")}
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("state.")}
    try:
        out = slim(model, masks, example_inputs=example_inputs)
        out.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # corrupt or foreign tensors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"load_slim: {path}: its tensors do not rebuild the model given "
                         f"({reason[:300]})") from None
    return out
