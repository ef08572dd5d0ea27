"""The public entry points that compose the layers below: ``sp.score`` and ``sp.prune``
(one process or a process group, unstructured or structured), and ``sp.apply_masks``,
``sp.save_masks`` and ``sp.load_masks`` (element or channel masks).

- Unstructured, one process: :mod:`sparsepai.pruning.unstructured`.
- Structured (channel masks): :mod:`sparsepai.structured.prune`.
- ``group=``: :mod:`sparsepai.distributed.pruning`, which runs the one-process function chosen
  here on every rank.

Importing this module imports ``sparsepai.distributed`` and ``sparsepai.structured``, which plug
into the layers below them (gradient averaging and sharded gradients into ``sparsepai.core``,
channel masks into ``sparsepai.masks``).
"""

from __future__ import annotations

import torch

from sparsepai.core.loss import default_loss
from sparsepai.core.model import reiterable
from sparsepai.core.options import check_call, check_sparsity, explain_inference_mode
from sparsepai.distributed.pruning import prune_group, score_group
from sparsepai.masks.apply import apply_masks
from sparsepai.masks.io import load_masks, save_masks
from sparsepai.pruning.unstructured import prune_weights, score_weights
from sparsepai.structured.prune import prune_channels

__all__ = ["apply_masks", "load_masks", "prune", "save_masks", "score"]


def score(model: torch.nn.Module, method: str, data=None, *, loss_fn=None, group=None,
          **options) -> dict:
    """Saliency of every prunable weight (higher = more important).

    Args:
        model: the network, at initialization. Left exactly as it was (weights, buffers,
            gradients, train/eval mode): methods run on a private copy.
        method: one of ``"random"``, ``"magnitude"``, ``"snip"``, ``"grasp"``, ``"synflow"``,
            ``"force"``, ``"prospr"``, ``"autosparse"`` (``predictor=``: a trained
            ``sp.autosparse.Predictor`` or its file) (see each module's config for its options).
        data: an iterable of ``(inputs, targets)`` batches (not needed by random, magnitude,
            synflow with ``input_shape`` or ``example_inputs``). ``inputs`` is a tensor, a tuple
            or list (positional arguments) or a dict (keyword arguments).
        loss_fn: ``loss_fn(logits, targets)``; the logits are the model's output if it is a
            tensor, else its ``logits`` (Hugging Face ``ModelOutput``) or first element (tuple).
            Default: cross-entropy, mean (class dimension last for (B, T, classes) logits with
            (B, T) targets).
        group: a ``torch.distributed`` process group; every rank calls with its own ``data``.
            Replicated models (plain or ``DistributedDataParallel``) get gradients averaged over
            the group, sharded ones (FSDP2) ``DTensor`` scores of their own shards: see
            :mod:`sparsepai.distributed.pruning`.
        **options: the method's options (checked before any work: ``TypeError``/``ValueError``
            naming the method and the option), plus ``prunable`` (which weights are scored:
            names, or a predicate; default every Conv/Linear weight and linear layers under
            another name, such as ``transformers``' ``Conv1D``).

    Returns:
        ``{parameter name: scores}``, in ``model.named_parameters()`` order.

    Shapes:
        ``scores[name].shape == dict(model.named_parameters())[name].shape``.
    """
    check_call("score", model, method, loss_fn)
    data = reiterable(data)
    if group is not None:
        return score_group(model, method, data, loss_fn, group, options, local=score_weights)
    return score_weights(model, method, data, loss_fn=loss_fn, **options)


def prune(model: torch.nn.Module, method: str, sparsity: float, data=None, *,
          structured: bool = False, loss_fn=None, group=None, **options) -> dict:
    """Keep-masks (bool, True = kept) from :func:`score`, thresholded with ``sp.topk_mask``.

    Args:
        model, method, data, loss_fn, group: as for :func:`score`; with ``group`` every rank
            gets the same masks (replicated), or ``DTensor`` masks of its shards thresholded
            globally (sharded).
        sparsity: the fraction of prunable weights removed, in [0, 1). Of the N prunable weights
            exactly ``N - round(sparsity * N)`` are kept.
        structured: channel masks instead: ``{module name: bool (out_channels,)}`` for every
            convolution and linear layer whose outputs can be pruned (not the classifier);
            coupled layers (residual sums) get the same mask. Methods: ``magnitude`` (filter
            L1 norm), ``random``, ``snip`` (3SP), ``prospr`` (the meta-gradient with respect
            to channel masks); option ``cost_weighting`` (``True``, or an exponent ``alpha``:
            each channel's score divided by its relative multiply-adds ** alpha; ``False``
            by default). Structured ``prospr`` defaults to ``first_order=True,
            cost_weighting=0.5, min_per_layer=8`` (the worst cells of
            ``benchmarks/bench_defaults_grid.py``;
            :func:`sparsepai.structured.prune.channel_defaults`).
            ``sparsity`` counts the weights removed including the input columns that die with
            a pruned channel (closest from above at channel granularity), or with
            ``unit="channels"`` the channels. See
            :func:`sparsepai.structured.prune.prune_channels`.
        **options: the method's options, plus ``prunable``, ``scope`` (``"global"``, default, or
            ``"layer"``: every layer keeps the same fraction) and ``min_per_layer`` (with global
            scope, at least this many weights kept in every layer, against layer collapse;
            with ``structured=True``, channels: every layer keeps its best
            ``max(1, min(min_per_layer, n))``).
            Iterative methods (SynFlow, FORCE, lottery) threshold every round this way.

    Returns:
        ``{parameter name: bool mask}`` shaped like the parameters. A layer left with no weight
        raises a warning naming it.
    """
    check_call("prune", model, method, loss_fn, structured)
    data = reiterable(data)
    if group is not None:
        return prune_group(model, method, sparsity, data, structured, loss_fn, group, options,
                           local=_prune_local)
    return _prune_local(model, method, sparsity, data, structured=structured, loss_fn=loss_fn,
                        **options)


def _prune_local(model, method, sparsity, data=None, *, structured=False, loss_fn=None,
                 **options) -> dict:
    """``sp.prune`` in one process (on every rank, under ``group=``)."""
    if structured:
        check_sparsity(sparsity)
        with explain_inference_mode("prune", method):
            return prune_channels(model, method, sparsity, data, default_loss(loss_fn), options)
    return prune_weights(model, method, sparsity, data, loss_fn=loss_fn, **options)
