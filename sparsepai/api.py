"""``sp.score`` and ``sp.prune``: saliency of every prunable weight, and keep-masks from it."""

from __future__ import annotations

import contextlib
import warnings

import torch

from sparsepai.masks.threshold import SCOPES, threshold
from sparsepai.core.registry import (
    default_loss,
    get_method,
    keep_count,
    private_copy,
    prunable_names,
    reiterable,
)
from sparsepai.core.options import make_config


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
        from sparsepai.distributed.pruning import score_group

        return score_group(model, method, data, loss_fn, group, options)
    m = get_method(method)
    options = dict(options)
    prunable = options.pop("prunable", None)
    cfg = make_config(m, options)
    names = prunable_names(model, prunable)
    work = private_copy(model, names)
    with explain_inference_mode("score", method), torch.enable_grad():
        out = m.scores(m.saliency(work, names, data, default_loss(loss_fn), cfg))
    return {n: out[n].detach() for n in names}


# what each method needs of the weights' values: said when a model on the meta device has none
_NEEDS = {"random": "draws masks for the weights' real tensors",
          "magnitude": "ranks the weights' values"}


def check_call(what: str, model, method, loss_fn, structured: bool = False) -> None:
    """The arguments every ``sp.score``/``sp.prune`` call shares, checked before any work
    (``group=`` is checked by :mod:`sparsepai.distributed.pruning`)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{what}: model must be a torch.nn.Module, got {type(model).__name__}")
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"{what}: loss_fn must be callable as loss_fn(logits, targets), got "
                        f"{type(loss_fn).__name__} {loss_fn!r}")
    if any(p.is_meta for p in model.parameters()):
        if structured:
            raise ValueError(f"{what}: the model is on the meta device (no weights); structured "
                             "pruning scores real weights on an example: materialise the model "
                             "(model.to_empty(device='cpu') then initialise or load its weights) "
                             "and pass example_inputs= (or data) on that device")
        need = _NEEDS.get(method, "takes gradients of the weights' values on data")
        raise ValueError(f"{what}: the model is on the meta device (no weight values); method "
                         f"{method!r} {need}: materialise it first (model.to_empty(device=...) "
                         "then initialise or load its weights)")


@contextlib.contextmanager
def explain_inference_mode(what: str, method):
    """A failure inside ``torch.inference_mode()`` explained: gradients cannot be taken there
    (``torch.enable_grad`` lifts ``no_grad``, not inference mode)."""
    try:
        yield
    except RuntimeError as exc:
        if not torch.is_inference_mode_enabled():
            raise
        raise RuntimeError(f"{what}: method {method!r} takes gradients, which "
                           "torch.inference_mode() forbids (torch.enable_grad cannot lift it, "
                           f"as it lifts no_grad); call {what} outside the inference_mode "
                           "block") from exc


def check_sparsity(sparsity):
    """A clear error unless ``sparsity`` is a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise TypeError(f"sparsity must be a number in [0, 1), got {type(sparsity).__name__}")
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def check_no_nan(method: str, scores: dict, what: str = "layers") -> None:
    """Refuse NaN scores: ``sp.topk_mask`` would rank them lowest, so the masks would be decided
    by position (one layer kept whole, another emptied) without a word.

    Args:
        method: the method's name, for the message. scores: ``{layer name: scores}``.

    Raises:
        ValueError: naming the method and the layers with NaN scores.
    """
    bad = [n for n, s in scores.items() if bool(torch.isnan(s).any())]
    if bad:
        raise nan_error(method, bad, len(scores), what)


def nan_error(method: str, bad: list, total: int, what: str = "layers") -> ValueError:
    """The error of :func:`check_no_nan` for the ``bad`` of ``total`` score tensors."""
    return ValueError(f"prune: method {method!r} gave NaN scores in {len(bad)} of {total} "
                      f"{what} ({', '.join(map(str, bad[:5]))}); no masks from them: check the "
                      "model's weights, the data and the method's options (a corrupt predictor "
                      "file, a too large learning rate)")


def check_min_per_layer(min_per_layer, scope):
    """The ``min_per_layer`` option (weights, or channels when structured) and its scope."""
    if isinstance(min_per_layer, bool) or not isinstance(min_per_layer, int):
        raise TypeError(f"prune: min_per_layer must be an int, got "
                        f"{type(min_per_layer).__name__}")
    if min_per_layer < 0 or (min_per_layer and scope != "global"):
        raise ValueError(f"prune: min_per_layer must be >= 0 and goes with scope='global', got "
                         f"{min_per_layer} with scope={scope!r}")


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
            each channel's score divided by its relative multiply-adds ** alpha; default
            ``True`` for ``prospr``, measured in ``benchmarks/bench_time_to_accuracy.py``,
            ``False`` for the others).
            ``sparsity`` counts the weights removed including the input columns that die with
            a pruned channel (closest from above at channel granularity), or with
            ``unit="channels"`` the channels. See
            :func:`sparsepai.structured.channels.prune_channels`.
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
        from sparsepai.distributed.pruning import prune_group

        return prune_group(model, method, sparsity, data, structured, loss_fn, group, options)
    check_sparsity(sparsity)
    if structured:
        from sparsepai.structured.channels import prune_channels

        with explain_inference_mode("prune", method):
            return prune_channels(model, method, sparsity, data, default_loss(loss_fn), options)
    options = dict(options)
    scope = options.pop("scope", "global")
    min_per_layer = options.pop("min_per_layer", 0)
    if scope not in SCOPES:
        raise ValueError(f"prune: scope must be 'global' or 'layer', got {scope!r}")
    check_min_per_layer(min_per_layer, scope)
    m = get_method(method)
    names = prunable_names(model, options.pop("prunable", None))
    cfg = make_config(m, options)
    params = dict(model.named_parameters())
    keep = keep_count(params, names, sparsity)
    forced = sum(min(min_per_layer, params[n].numel()) for n in names)
    if forced > keep:
        raise ValueError(f"prune: min_per_layer={min_per_layer} keeps {forced} weights, more "
                         f"than the {keep} the sparsity allows")
    def thresh(scores, keep):  # every round of an iterative method too
        check_no_nan(method, scores)
        return threshold(scores, keep, scope=scope, min_per_layer=min_per_layer)

    with explain_inference_mode("prune", method), torch.enable_grad():
        masks = m.masks(private_copy(model, names), names, data, default_loss(loss_fn), cfg, keep,
                        thresh)
    masks = {n: masks[n].to(params[n].device) for n in names}
    for n in names:
        if not bool(masks[n].any()):
            warnings.warn(f"prune: layer {n!r} is fully pruned (layer collapse); consider "
                          "min_per_layer=... or a lower sparsity", RuntimeWarning, stacklevel=2)
    return masks
