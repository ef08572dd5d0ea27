"""Masked optimizers: SGD and AdamW that keep pruned weights at exactly zero.

Drop-in subclasses of ``torch.optim.SGD`` and ``torch.optim.AdamW`` (param groups, schedulers,
``zero_grad``, ``state_dict`` in the same format) whose ``step`` is one fused kernel call per
param group and dtype (``sparsepai::masked_sgd_`` / ``masked_adamw_``): each tensor is read and
written once, the mask applied inside, so pruning costs no extra passes over memory. Masks are
kept bit-packed (1 bit per weight).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

import torch

from sparsepai._ext import has_op
from sparsepai.ops import masked_optim_ref as ref
from sparsepai.optim.masks import pack_mask, unpack_mask

_MASK_ATTR = "_sparsepai_mask"  # set on parameters by sp.apply_masks


class _Masked:
    """Mask handling shared by the masked optimizers (a mixin over a torch.optim class)."""

    _op_name: str

    def _setup_masks(self, masks):
        named = [(n, p) for n, p in self._named_params()]
        for name, p in named:
            if p.is_complex():
                raise TypeError(f"{type(self).__name__}: parameter {name!r} is complex; "
                                "complex parameters are not supported")
        resolved = self._resolve_masks(masks, named)
        self._words = {}
        for (name, p), m in zip(named, resolved):
            self._words[p] = None if m is None else pack_mask(m)
        self._zero_pruned()

    def _named_params(self):
        for gi, group in enumerate(self.param_groups):
            names = group.get("param_names")
            for j, p in enumerate(group["params"]):
                yield (names[j] if names else f"param_groups[{gi}]['params'][{j}]"), p

    def _resolve_masks(self, masks, named):
        cls = type(self).__name__
        if masks is None:  # the masks sp.apply_masks recorded on the parameters
            return [getattr(p, _MASK_ATTR, None) for _, p in named]
        if isinstance(masks, Mapping):
            if not any("param_names" in g for g in self.param_groups):
                raise ValueError(f"{cls}: masks given by name need params from "
                                 "model.named_parameters()")
            names = {n for n, _ in named}
            unknown = sorted(set(masks) - names)
            if unknown:
                raise ValueError(f"{cls}: masks given for parameters the optimizer does not have: "
                                 f"{unknown[:5]}")
            out = [masks.get(n) for n, _ in named]
        else:
            out = list(masks)
            if len(out) != len(named):
                raise ValueError(f"{cls}: got {len(out)} masks for {len(named)} parameters")
        for (name, p), m in zip(named, out):
            if m is None:
                continue
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                raise TypeError(f"{cls}: the mask of {name!r} must be a bool tensor, got "
                                f"{getattr(m, 'dtype', type(m).__name__)}")
            if m.shape != p.shape:
                raise ValueError(f"{cls}: the mask of {name!r} has shape {tuple(m.shape)}, the "
                                 f"parameter {tuple(p.shape)}")
            if m.device != p.device:
                raise ValueError(f"{cls}: the mask of {name!r} is on {m.device}, the parameter "
                                 f"on {p.device}")
        return out

    def _state_names(self):
        """Names of the per-parameter state tensors that masks apply to (each optimizer's own)."""
        return ()

    @torch.no_grad()
    def _zero_pruned(self):
        """Pruned entries of every parameter and state tensor to exact zeros."""
        for p, words in self._words.items():
            if words is None:
                continue
            keep = unpack_mask(words, p.shape)
            p.masked_fill_(~keep, 0)
            for key in self._state_names():
                t = self.state.get(p, {}).get(key)
                if isinstance(t, torch.Tensor) and t.shape == p.shape:
                    t.masked_fill_(~keep, 0)

    def masks(self) -> list:
        """The keep-masks (bool, or None for unmasked parameters) in parameter order."""
        return [None if self._words[p] is None else unpack_mask(self._words[p], p.shape)
                for _, p in self._named_params()]

    def state_dict(self):
        sd = super().state_dict()
        sd["masks"] = {i: m for i, m in enumerate(self.masks())}
        return sd

    def load_state_dict(self, state_dict):
        cls = type(self).__name__
        named = list(self._named_params())
        # Check everything before touching anything: nothing half-loaded.
        groups = state_dict.get("param_groups", [])
        if len(groups) != len(self.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)
        ):
            raise ValueError(f"{cls}.load_state_dict: the state dict is for a different model "
                             "(its parameter groups do not match this optimizer's)")
        ids = [i for g in groups for i in g["params"]]
        by_id = dict(zip(ids, [p for _, p in named]))
        for pid, st in state_dict.get("state", {}).items():
            p = by_id.get(pid)
            if p is None:
                raise ValueError(f"{cls}.load_state_dict: state for unknown parameter id {pid}")
            for key, t in st.items():
                if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape != p.shape:
                    raise ValueError(
                        f"{cls}.load_state_dict: state {key!r} has shape {tuple(t.shape)} but "
                        f"parameter {named[ids.index(pid)][0]!r} has {tuple(p.shape)}: the state "
                        "dict is for a different model")
        new_masks = None
        if "masks" in state_dict:
            saved = state_dict["masks"]
            new_masks = [saved.get(i, saved.get(str(i))) for i in range(len(named))]
            self._resolve_masks([None if m is None else m.to(p.device)
                                 for m, (_, p) in zip(new_masks, named)], named)
        sd = {k: v for k, v in state_dict.items() if k != "masks"}
        super().load_state_dict(sd)
        if new_masks is not None:
            self._words = {p: None if m is None else pack_mask(m.to(p.device))
                           for m, (_, p) in zip(new_masks, named)}
        self._zero_pruned()

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if hasattr(self, "_words"):  # after construction: new params, masks from their tags
            for p in self.param_groups[-1]["params"]:
                m = getattr(p, _MASK_ATTR, None)
                self._words[p] = None if m is None else pack_mask(m)
            self._zero_pruned()

    def _groups(self, closure):
        """Runs the closure (with grad enabled), then yields the param groups, checked."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if isinstance(group["lr"], torch.Tensor):
                raise TypeError(f"{type(self).__name__}: tensor learning rates are not supported")
        return loss, self.param_groups

    def _collect(self, group):
        """Params with gradients, checked, with their mask words."""
        out = []
        names = group.get("param_names")
        for j, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                name = names[j] if names else f"params[{j}]"
                raise RuntimeError(f"{type(self).__name__}: parameter {name!r} has a sparse "
                                   "gradient; masked optimizers need dense gradients")
            words = self._words.get(p)
            out.append((p, words))
        return out


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # float64: the reference


def _use_kernel(op, ps):
    return (has_op(op, ps[0].device.type) and ps[0].dtype in _KERNEL_DTYPES
            and all(p.is_contiguous() for p in ps))


def _buckets(items, key):
    d = defaultdict(list)
    for it in items:
        d[key(it)].append(it)
    return d.values()


def _empty_words(p):
    return torch.empty(0, dtype=torch.int64, device=p.device)


class MaskedSGD(_Masked, torch.optim.SGD):
    """``torch.optim.SGD`` whose pruned weights (and momentum) stay exactly zero.

    Args:
        params: as for ``torch.optim.SGD`` (tensors, param-group dicts, or
            ``model.named_parameters()``).
        masks: keep-masks (bool, True = kept) aligned with the flat list of parameters (``None``
            entries are not masked), or ``{name: mask}`` when ``params`` are named; ``None`` takes
            the masks that :func:`sparsepai.apply_masks` recorded on the parameters.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as for ``torch.optim.SGD``.

    On kept entries the update is torch's SGD update (float32 math, also for fp16/bf16
    parameters); pruned entries of the parameters and momentum buffers are exactly 0 after every
    step, whatever the gradient holds there.
    """

    def __init__(self, params, masks, lr, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, maximize=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         foreach=False, fused=False)
        self._setup_masks(masks)

    def _state_names(self):
        return ("momentum_buffer",)

    @torch.no_grad()
    def step(self, closure=None):
        loss, groups = self._groups(closure)
        for group in groups:
            mom = group["momentum"]
            items = []
            for p, words in self._collect(group):
                first = False
                if mom != 0:
                    st = self.state[p]
                    if st.get("momentum_buffer") is None:
                        st["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                        first = True
                items.append((p, words, first))
            for bucket in _buckets(items, lambda it: (it[0].device, it[0].dtype, it[2])):
                ps = [it[0] for it in bucket]
                gs = [it[0].grad for it in bucket]
                ws = [it[1] if it[1] is not None else _empty_words(it[0]) for it in bucket]
                bufs = [self.state[p]["momentum_buffer"] for p in ps] if mom != 0 else []
                args = (group["lr"], mom, group["dampening"], group["weight_decay"],
                        group["nesterov"], group["maximize"], bucket[0][2])
                if _use_kernel("masked_sgd_", ps):
                    gs = [g.contiguous() for g in gs]
                    torch.ops.sparsepai.masked_sgd_(ps, gs, bufs, ws, *args)
                else:
                    ref.masked_sgd_ref(ps, gs, bufs, ws, *args)
        return loss


class MaskedAdamW(_Masked, torch.optim.AdamW):
    """``torch.optim.AdamW`` whose pruned weights (and moments) stay exactly zero.

    Args:
        params, masks: as for :class:`MaskedSGD`.
        lr, betas, eps, weight_decay, amsgrad, maximize: as for ``torch.optim.AdamW``.
    """

    def __init__(self, params, masks, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, foreach=False, fused=False)
        self._setup_masks(masks)

    def _state_names(self):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    @torch.no_grad()
    def step(self, closure=None):
        loss, groups = self._groups(closure)
        for group in groups:
            amsgrad = group["amsgrad"]
            items = self._collect(group)
            for p, _ in items:
                st = self.state[p]
                if len(st) == 0:
                    st["step"] = torch.tensor(0.0, dtype=torch.float32)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    if amsgrad:
                        st["max_exp_avg_sq"] = torch.zeros_like(
                            p, memory_format=torch.contiguous_format)
            if not items:
                continue
            steps_t = [self.state[p]["step"] for p, _ in items]
            torch._foreach_add_(steps_t, 1.0)
            step_of = dict(zip([id(p) for p, _ in items], torch.stack(steps_t).tolist()))
            beta1, beta2 = group["betas"]
            for bucket in _buckets(items, lambda it: (it[0].device, it[0].dtype)):
                ps = [it[0] for it in bucket]
                st = [self.state[p] for p in ps]
                ws = [it[1] if it[1] is not None else _empty_words(it[0]) for it in bucket]
                gs = [p.grad for p in ps]
                args = ([step_of[id(p)] for p in ps], group["lr"], beta1, beta2,
                        group["weight_decay"], group["eps"], amsgrad, group["maximize"])
                m = [s["exp_avg"] for s in st]
                v = [s["exp_avg_sq"] for s in st]
                vmax = [s["max_exp_avg_sq"] for s in st] if amsgrad else []
                if _use_kernel("masked_adamw_", ps):
                    gs = [g.contiguous() for g in gs]
                    torch.ops.sparsepai.masked_adamw_(ps, gs, m, v, vmax, ws, *args)
                else:
                    ref.masked_adamw_ref(ps, gs, m, v, vmax, ws, *args)
        return loss
