"""Global top-k over many tensors at once: ``topk_mask`` and ``kth_largest``.

The Python face of the ``sparsepai::topk_mask`` family of ops: argument checks, fake
implementations, and the call through the dispatch table (sparsepai/ops/dispatch.py), which
chooses the C++ CPU/CUDA kernels, the Triton kernels (sparsepai/ops/topk_triton.py) or the
references (sparsepai/ops/topk_ref.py).
"""

from __future__ import annotations

import operator
from typing import NamedTuple, Sequence

import torch

from sparsepai._comm import check_group
from sparsepai._ext import has_extension
from sparsepai.ops import dispatch
from sparsepai.ops.topk_dist import topk_distributed
from sparsepai.ops.topk_ref import NAN_MODES, TRANSFORMS, common_dtype

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class TopkResult(NamedTuple):
    """Result of :func:`topk_mask`.

    Attributes:
        threshold: 0-d tensor, the k-th largest (or smallest) value, never NaN; ``+inf``
            (largest) or ``-inf`` (smallest) when ``k == 0``. When the k-th value is a NaN ranked
            by ``nan="high"``/``"low"`` it is ``+inf``/``-inf``.
        masks: one bool tensor per score tensor, same shape, True = among the top k.
        kept: number of True entries over all masks (== k).
    """

    threshold: torch.Tensor
    masks: list
    kept: int


def _check_args(scores, k, nan, op, transform="none"):
    if isinstance(scores, torch.Tensor):
        scores = [scores]
    if not isinstance(scores, Sequence):
        try:
            scores = list(scores)
        except TypeError:
            raise TypeError(f"sparsepai.{op}: scores must be a sequence of tensors") from None
    scores = list(scores)
    for i, s in enumerate(scores):
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"sparsepai.{op}: scores[{i}] is a {type(s).__name__}, not a tensor")
        if s.dtype not in _FLOAT_DTYPES:
            raise TypeError(
                f"sparsepai.{op}: scores[{i}] has dtype {s.dtype}; expected float16, bfloat16, "
                "float32 or float64"
            )
        if s.device != scores[0].device:
            raise ValueError(
                f"sparsepai.{op}: all scores must be on one device; scores[0] is on "
                f"{scores[0].device}, scores[{i}] on {s.device}"
            )
        if s.layout != torch.strided:
            raise ValueError(f"sparsepai.{op}: scores[{i}] must be a dense (strided) tensor")
        if s.device.type == "meta":
            raise ValueError(f"sparsepai.{op}: scores[{i}] is on the meta device: it holds no "
                             "values to rank")
    # Ranking is not differentiable: detached views keep autograd out of the ops (no copy).
    scores = [s.detach() for s in scores]
    if isinstance(k, bool) or isinstance(k, float):
        raise TypeError(f"sparsepai.{op}: k must be an int, got {type(k).__name__}")
    try:
        k = operator.index(k)
    except TypeError:
        if isinstance(k, torch.Tensor) and k.numel() == 1 and not k.is_floating_point():
            k = int(k)
        else:
            raise TypeError(f"sparsepai.{op}: k must be an int, got {type(k).__name__}") from None
    if nan not in NAN_MODES:
        raise ValueError(f"sparsepai.{op}: nan must be 'error', 'low' or 'high', got {nan!r}")
    if transform not in TRANSFORMS:
        raise ValueError(f"sparsepai.{op}: transform must be 'none' or 'abs', got {transform!r}")
    return scores, k


def _check_largest(largest, op):
    if not isinstance(largest, bool):
        raise TypeError(f"sparsepai.{op}: largest must be True or False, got {largest!r}")


def _check_k(k, n, op):
    if not 0 <= k <= n:
        raise ValueError(f"sparsepai.{op}: k must be in [0, {n}] (the number of scores), got {k}")


def topk_mask(
    scores: Sequence[torch.Tensor],
    k: int,
    *,
    largest: bool = True,
    nan: str = "error",
    transform: str = "none",
    group=None,
) -> TopkResult:
    """Keep exactly ``k`` of all scores, globally over many tensors, without concatenating them.

    Args:
        scores: float16/bfloat16/float32/float64 tensors of any shapes (contiguous or not, empty
            allowed), all on one device. Their total size may exceed 2**31.
        k: how many entries to keep in total, ``0 <= k <= N``.
        largest: keep the k largest (default) or the k smallest.
        nan: ``"error"`` raises ValueError naming the tensor holding a NaN; ``"low"`` ranks NaN
            below every number, ``"high"`` above. -0.0 and +0.0 tie.
        transform: ``"none"`` ranks the scores; ``"abs"`` ranks their magnitudes ``|x|``
            without making an ``|x|`` tensor (the kernels clear each element's sign bit before
            its key), so magnitude pruning costs no score memory. The threshold is then a
            magnitude.
        group: a ``torch.distributed`` process group; each rank passes its own shard, and k,
            the threshold and the tie order (rank, then list position, then flat index) are
            global.

    Returns:
        :class:`TopkResult` ``(threshold, masks, kept)``. Ties at the threshold are kept in
        position order: earlier tensors first, lower row-major flat index first.

    Shapes:
        ``masks[i].shape == scores[i].shape``, dtype bool; ``threshold`` is 0-d in the common
        dtype of the scores (their dtype, or float32/float64 for mixed dtypes).
    """
    scores, k = _check_args(scores, k, nan, "topk_mask", transform)
    _check_largest(largest, "topk_mask")
    code = TRANSFORMS[transform]
    if group is not None:
        check_group("sparsepai.topk_mask", group)
    if group is not None:
        thr, masks = topk_distributed(scores, k, largest, NAN_MODES[nan], group, True, code)
        return TopkResult(thr, masks, k)
    n = sum(s.numel() for s in scores)
    _check_k(k, n, "topk_mask")
    if not scores:
        return TopkResult(torch.tensor(float("inf") if largest else float("-inf")), [], 0)
    thr, masks = dispatch.call("topk_mask", scores[0].device.type, scores, k, largest,
                               NAN_MODES[nan], code)
    return TopkResult(thr, list(masks), k)


def kth_largest(
    scores: Sequence[torch.Tensor],
    k: int,
    *,
    largest: bool = True,
    nan: str = "error",
    transform: str = "none",
    group=None,
) -> torch.Tensor:
    """The threshold of :func:`topk_mask` alone (0-d tensor), without building masks.

    ``largest=False`` gives the k-th smallest (of ``|x|`` with ``transform="abs"``). Same
    arguments and rules as :func:`topk_mask`.
    """
    scores, k = _check_args(scores, k, nan, "kth_largest", transform)
    _check_largest(largest, "kth_largest")
    code = TRANSFORMS[transform]
    if group is not None:
        check_group("sparsepai.kth_largest", group)
    if group is not None:
        return topk_distributed(scores, k, largest, NAN_MODES[nan], group, False, code)[0]
    n = sum(s.numel() for s in scores)
    _check_k(k, n, "kth_largest")
    if not scores:
        return torch.tensor(float("inf") if largest else float("-inf"))
    return dispatch.call("kth_largest", scores[0].device.type, scores, k, largest,
                         NAN_MODES[nan], code)


def _register_fakes():
    """Shapes of the ops' outputs, so torch.compile and FakeTensor tracing can use them."""
    if not has_extension():
        return
    lib = "sparsepai::"

    def _thr(scores):
        dtype = common_dtype(s.dtype for s in scores)
        dev = scores[0].device if len(scores) else torch.device("cpu")
        return torch.empty((), dtype=dtype, device=dev)

    def _masks(scores):
        return [torch.empty(s.shape, dtype=torch.bool, device=s.device) for s in scores]

    @torch.library.register_fake(lib + "topk_mask")
    def _(scores, k, largest, nan, transform=0):
        return _thr(scores), _masks(scores)

    @torch.library.register_fake(lib + "kth_largest")
    def _(scores, k, largest, nan, transform=0):
        return _thr(scores)

    @torch.library.register_fake(lib + "key_histogram")
    def _(scores, shift, bits, prefix, largest, nan, transform=0):
        return torch.empty(1 << bits, dtype=torch.int64, device=scores[0].device)

    @torch.library.register_fake(lib + "threshold_masks")
    def _(scores, threshold_key, budget, largest, nan, transform=0):
        return _masks(scores)

    @torch.library.register_fake(lib + "first_nan")
    def _(scores):
        return torch.empty((), dtype=torch.int64, device=scores[0].device)


_register_fakes()
