"""``sp.sparsify``: run the pruned layers of an unstructured-masked model on sparse kernels.

See :func:`sparsify`. The kernels: :mod:`sparsepai.ops.sparse_conv`,
:mod:`sparsepai.ops.sparse_linear`; the layers: :mod:`sparsepai.sparse.modules`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping

import torch

from sparsepai.sparse.modules import SparseConv2d, SparseLinear
from sparsepai.sparse.timing import time_fwd_bwd

REPORT_ATTR = "sparsepai_sparsify_report"


@dataclasses.dataclass(frozen=True)
class SparsifyEntry:
    """What :func:`sparsify` did with one ``Conv2d``/``Linear``.

    Attributes:
        name: the module's name in the model.
        kind: ``"Conv2d"`` or ``"Linear"``.
        sparsity: fraction of its weights pruned.
        swapped: True when it now runs on the sparse kernels (or, without example inputs, is a
            sparse layer that decides on its first call: ``reason`` says ``"first call"``).
        reason: why, in a few words.
        dense_ms, sparse_ms: the measured forward + backward times (None when not measured).
    """

    name: str
    kind: str
    sparsity: float
    swapped: bool
    reason: str
    dense_ms: float | None = None
    sparse_ms: float | None = None


def _why_not(module: torch.nn.Module, sparsity: float, min_sparsity: float) -> str | None:
    if sparsity < min_sparsity:
        return f"sparsity {sparsity:.3f} < min_sparsity {min_sparsity}"
    w = module.weight
    if w.device.type != "cpu":
        return f"on {w.device.type}: the sparse kernels run on the CPU"
    if w.dtype not in (torch.float32, torch.float64):
        return f"dtype {w.dtype}: the sparse kernels take float32 and float64"
    if isinstance(module, torch.nn.Conv2d) and (
            module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)):
        return "grouped, string-padded or non-zero-padded convolution"
    return None


def _input_shapes(model, example_inputs, names) -> dict:
    """The input shape of each named module on one forward of ``example_inputs`` (eval mode, no
    gradients: running statistics of the model stay as they are)."""
    modules = dict(model.named_modules())
    shapes: dict = {}

    def hook(name):
        def record(module, args):
            shapes.setdefault(name, tuple(args[0].shape))  # returns None: args unchanged
        return record

    hooks = [modules[n].register_forward_pre_hook(hook(n)) for n in names]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example_inputs, Mapping):
                model(**example_inputs)
            elif isinstance(example_inputs, (tuple, list)):
                model(*example_inputs)
            else:
                model(example_inputs)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


def _set(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def sparsify(model: torch.nn.Module, masks: Mapping[str, torch.Tensor] | None = None, *,
             example_inputs=None, min_sparsity: float = 0.8) -> torch.nn.Module:
    """Run the pruned ``Conv2d``/``Linear`` layers of ``model`` on sparse kernels, in place.

    Each ``Conv2d`` (groups = 1) and ``Linear`` whose weight is at least ``min_sparsity``
    pruned is replaced by :class:`~sparsepai.sparse.modules.SparseConv2d` /
    :class:`~sparsepai.sparse.modules.SparseLinear` if forward plus backward measures faster than
    the masked dense layer: on ``example_inputs`` when given, else on the shapes of the layer's
    first call (the layer is swapped at once and keeps the dense path where that is faster, so
    that optimizers built after this call stay valid). Other layers stay masked dense layers.

    Args:
        model: an unstructured-masked network (CPU tensors for the swap; layers on other devices
            stay dense, with one warning).
        masks: ``{parameter name: bool keep-mask}`` as ``sp.prune`` returns; None takes the masks
            ``sp.apply_masks`` recorded on the model.
        example_inputs: a tensor, tuple or dict of inputs, as for ``sp.prune``; optional.
        min_sparsity: the least fraction of pruned weights for a layer to be considered.

    Returns:
        The same model. ``model.sparsepai_sparsify_report`` lists a :class:`SparsifyEntry` per
        masked ``Conv2d``/``Linear``. The model computes what the masked dense model computes (to
        float32 rounding), trains with ``torch.optim`` and ``sp.optim`` optimizers built after the
        call, and its ``state_dict()`` has the dense keys and shapes.

    Raises:
        ValueError: no masks, masks of another model or shape, channel masks, or
            ``min_sparsity`` outside [0, 1]. Nothing is changed then.

    Example:
        >>> masks = sp.prune(model, "prospr", 0.95, data)
        >>> sp.apply_masks(model, masks)
        >>> sp.sparsify(model, example_inputs=torch.randn(64, 3, 32, 32))
    """
    from sparsepai.masks.apply import check_masks

    if not (isinstance(min_sparsity, (int, float)) and 0.0 <= float(min_sparsity) <= 1.0):
        raise ValueError(f"sparsify: min_sparsity must be in [0, 1], got {min_sparsity!r}")
    if masks is None:
        masks = getattr(model, "sparsepai_masks", None)
        if masks is None:
            raise ValueError("sparsify: masks is None and the model has no masks recorded by "
                             "sp.apply_masks")
    if check_masks(model, masks, "sparsify"):
        raise ValueError("sparsify: needs unstructured element masks {parameter name: mask}; "
                         "channel masks make a smaller dense model with sp.slim instead")
    report, todo, off_cpu = [], [], []
    for name, module in model.named_modules():
        if not isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            continue
        if isinstance(module, (SparseConv2d, SparseLinear)):
            continue
        key = f"{name}.weight" if name else "weight"
        if key not in masks:
            continue
        kind = "Conv2d" if isinstance(module, torch.nn.Conv2d) else "Linear"
        mask = masks[key]
        sparsity = 1.0 - float(mask.sum()) / max(mask.numel(), 1)
        why = _why_not(module, sparsity, float(min_sparsity))
        if why is not None:
            if module.weight.device.type != "cpu" and sparsity >= min_sparsity:
                off_cpu.append(name)
            report.append(SparsifyEntry(name, kind, sparsity, False, why))
            continue
        todo.append((name, module, kind, mask.to(module.weight.device), sparsity))
    if off_cpu:
        warnings.warn(f"sparsify: {len(off_cpu)} layers are not on the CPU and stay masked dense "
                      f"layers (the sparse kernels run on the CPU): {off_cpu[:3]}...",
                      RuntimeWarning, stacklevel=2)
    shapes = (_input_shapes(model, example_inputs, [t[0] for t in todo])
              if example_inputs is not None and todo else {})
    for name, module, kind, mask, sparsity in todo:
        cls = SparseConv2d if kind == "Conv2d" else SparseLinear
        if example_inputs is None:
            _set(model, name, cls(module, mask, mode="auto"))
            report.append(SparsifyEntry(name, kind, sparsity, True,
                                        "first call: times sparse and dense, keeps the faster"))
            continue
        if name not in shapes:
            report.append(SparsifyEntry(name, kind, sparsity, False,
                                        "not called on the example inputs"))
            continue
        sparse = cls(module, mask, mode="sparse")
        with torch.enable_grad():
            probe = torch.randn(shapes[name], dtype=module.weight.dtype)
            t_dense = time_fwd_bwd(module, probe, module.parameters())
            t_sparse = time_fwd_bwd(sparse, probe, sparse.parameters())
        faster = t_sparse < t_dense
        if faster:
            _set(model, name, sparse)
        report.append(SparsifyEntry(
            name, kind, sparsity, faster,
            f"sparse {t_dense / t_sparse:.2f}x dense" + ("" if faster else ": stays dense"),
            t_dense * 1e3, t_sparse * 1e3))
    # the layers left dense are masked dense layers: their masks on their weights, where the
    # masked optimizers find them (a deep copy of a masked model loses them)
    from sparsepai.masks.apply import _put

    params = dict(model.named_parameters())
    with torch.no_grad():
        _put(params, {k: m for k, m in masks.items() if k in params})
    setattr(model, REPORT_ATTR, tuple(report))
    return model


def densify(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every sparse layer of ``model`` by its dense equivalent in place (pruned weights
    zero, the mask recorded on the weight as ``sp.apply_masks`` does), e.g. before ``sp.slim``
    or an export. Returns the model."""
    from sparsepai.masks.apply import MASK_ATTR

    for name, module in list(model.named_modules()):
        if isinstance(module, (SparseConv2d, SparseLinear)):
            dense = module.to_dense()
            setattr(dense.weight, MASK_ATTR, module.mask())
            _set(model, name, dense)
    return model


def format_report(report) -> str:
    """One line per layer of a :func:`sparsify` report."""
    lines = []
    for e in report:
        t = "" if e.dense_ms is None else f"  dense {e.dense_ms:.2f} ms, sparse {e.sparse_ms:.2f} ms"
        lines.append(f"{e.name:<30} {e.kind:<7} sparsity {e.sparsity:.3f}  "
                     f"{'sparse' if e.swapped else 'dense '}  {e.reason}{t}")
    return "\n".join(lines)
