"""The channel graph of a model: :func:`analyse` builds it with the operator-level builder
(:mod:`~sparsepai.structured.opgraph`, on an example input) or the ``torch.fx`` fallback
(:mod:`~sparsepai.structured.fxgraph`), and keeps the graphs it built per architecture."""

from __future__ import annotations

from torch import nn

from sparsepai.structured.fxgraph import analyse_fx
from sparsepai.structured.graph import ChannelGraph
from sparsepai.structured.opgraph import analyse_export

_CACHE: dict = {}
_CACHE_SIZE = 16


def fingerprint(model: nn.Module) -> tuple:
    """What the graph of a model depends on besides its input: its class, module types and
    parameter and buffer shapes."""
    mods = tuple((n, type(m).__qualname__) for n, m in model.named_modules())
    tensors = tuple((n, tuple(t.shape)) for n, t in model.state_dict(keep_vars=True).items())
    return (type(model).__qualname__, mods, tensors)


def analyse(model: nn.Module, example_inputs=None, norm_streams: bool | None = None
            ) -> ChannelGraph:
    """The channel groups of ``model``.

    Args:
        model: any module (left untouched).
        example_inputs: an input to capture the model on: a tensor, a tuple of positional
            arguments or a dict of keyword arguments. Without one, the graph last built for this
            architecture is reused, or else a ``torch.fx`` trace over known module types is
            tried.
        norm_streams: also prune the channels whose only obstacle is a layer norm over them
            (a transformer's or ConvNeXt's hidden size) or a group norm (the same channels of
            every group), and the embeddings that write them. The norm's statistics then run
            over the kept channels only, so the slim model is *not* the masked dense model:
            an approximation, opt-in. None (default): False when building, and whichever the
            reused graph was built with.

    Returns:
        A :class:`ChannelGraph`.

    Raises:
        TraceError: naming the module that could not be captured, and what to pass.
        ValueError: ``norm_streams`` differs from the reused graph's and no input is given.
    """
    key = fingerprint(model)
    if example_inputs is None:
        if key in _CACHE:
            graph = _CACHE[key]
            if norm_streams is not None and graph.norm_streams != bool(norm_streams):
                raise ValueError(f"the channel graph kept for this model was built with "
                                 f"norm_streams={graph.norm_streams}; pass example_inputs= to "
                                 f"build one with norm_streams={bool(norm_streams)}")
            return graph
        if norm_streams:
            raise ValueError("norm_streams=True needs the operator-level graph: pass "
                             "example_inputs=")
        return analyse_fx(model)
    graph = analyse_export(model, example_inputs, bool(norm_streams))
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = graph
    return graph
