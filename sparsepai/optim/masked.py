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

from sparsepai.masks.apply import MASK_ATTR as _MASK_ATTR
from sparsepai.masks.bits import pack_mask, unpack_mask
from sparsepai.ops import masked_optim


def _local(t):
    """The local shard of an FSDP2 ``DTensor`` (parameter, gradient, state or mask), which is
    what the kernels and the packed mask words see; other tensors as they are."""
    return t.to_local() if hasattr(t, "to_local") else t


def _locals(ts):
    return [_local(t) for t in ts]


def _compact_default(kind: str) -> float:
    """Default ``compact_density``: up to where the compact step measured faster than the
    dense-state one (ResNet-18 shapes, benchmarks/bench_optim.py). With AVX-512 the kernels pack
    kept entries with vector compress/expand, so the compact layout wins up to mid densities;
    without it they pack element by element, which only pays off when very sparse."""
    avx512 = torch.backends.cpu.get_cpu_capability() == "AVX512"
    return {("sgd", True): 0.4, ("adamw", True): 0.6,
            ("sgd", False): 0.1, ("adamw", False): 0.15}[(kind, avx512)]


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
        self._kept_counts = {}  # p -> (its mask words, their kept count)
        self._plans = {}  # group index -> cached call lists (see _plan)
        self._words = {}
        for (name, p), m in zip(named, resolved):
            self._words[p] = None if m is None else pack_mask(_local(m))
        self._zero_pruned()
        self._relayout()

    def _check_compact_density(self, compact_density, kind):
        if compact_density is None:
            compact_density = _compact_default(kind)
        if not 0.0 <= float(compact_density) <= 1.0:
            raise ValueError(f"{type(self).__name__}: compact_density must be in [0, 1], got "
                             f"{compact_density}")
        self._compact_density = float(compact_density)

    def _is_compact(self, p) -> bool:
        """Whether ``p``'s state is stored compactly (its kept entries only, in index order).

        Only on the CPU, only where the chosen kernel reads compact state (the C++ CPU kernels
        and the references), and only for masks keeping at most ``compact_density`` of the
        entries: there the step reads and writes the state once per kept weight instead of once
        per weight, which is what makes very sparse models step faster than dense ones.
        """
        words = self._words.get(p)
        if words is None or p.device.type != "cpu" or p.numel() == 0 or hasattr(p, "to_local"):
            return False
        if not masked_optim.takes_compact_state(p):
            return False
        # a fully kept tensor gains nothing (and keeps torch's shapes)
        kept = self._kept_count(p)
        return kept < p.numel() and kept <= self._compact_density * p.numel()

    def _kept_count(self, p) -> int:
        words = self._words[p]
        if self._kept_counts.get(p, (None,))[0] is not words:  # masks replaced: count again
            self._kept_counts[p] = (words, int(unpack_mask(words, _local(p).shape).sum()))
        return self._kept_counts[p][1]

    def _new_state(self, p):
        """A zero state tensor for ``p`` in its layout (compact or ``p``'s shape)."""
        if self._is_compact(p):
            return torch.zeros(self._kept_count(p), dtype=p.dtype, device=p.device)
        return torch.zeros_like(p, memory_format=torch.contiguous_format)

    @torch.no_grad()
    def _relayout(self):
        """Every state tensor to its parameter's layout (after masks or state change)."""
        self._plans = {}  # the cached call lists hold the old tensors
        for p, words in self._words.items():
            st = self.state.get(p)
            if not st:
                continue
            compact = self._is_compact(p)
            for key in self._state_names():
                t = st.get(key)
                if not isinstance(t, torch.Tensor) or words is None:
                    continue
                if compact and t.shape == p.shape:
                    keep = unpack_mask(words, p.shape).reshape(-1)
                    st[key] = t.reshape(-1)[keep].contiguous()
                elif not compact and t.shape != p.shape:
                    st[key] = self._expand(p, t)

    def _expand(self, p, t):
        """A compact state tensor in ``p``'s shape, zeros at the pruned entries."""
        keep = unpack_mask(self._words[p], p.shape)
        out = torch.zeros(p.shape, dtype=t.dtype, device=t.device)
        out[keep] = t
        return out

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
            keep = unpack_mask(words, _local(p).shape)
            _local(p).masked_fill_(~keep, 0)
            for key in self._state_names():
                t = self.state.get(p, {}).get(key)
                if isinstance(t, torch.Tensor) and t.shape == p.shape:
                    _local(t).masked_fill_(~keep, 0)

    def masks(self) -> list:
        """The keep-masks (bool, or None for unmasked parameters) in parameter order."""
        out = []
        for _, p in self._named_params():
            words = self._words[p]
            m = None if words is None else unpack_mask(words, _local(p).shape)
            if m is not None and hasattr(p, "to_local"):
                from torch.distributed.tensor import DTensor

                m = DTensor.from_local(m, p.device_mesh, p.placements, run_check=False,
                                       shape=p.shape, stride=p.stride())
            out.append(m)
        return out

    def state_dict(self):
        """torch's state dict (dense state tensors, whatever the internal layout) plus
        ``"masks"``: it loads into the matching ``torch.optim`` class."""
        sd = super().state_dict()
        for i, (_, p) in enumerate(self._named_params()):
            st = sd["state"].get(i)
            if not st or not any(isinstance(t, torch.Tensor) and t.shape != p.shape
                                 for k, t in st.items() if k in self._state_names()):
                continue
            st = dict(st)  # torch hands out our own per-parameter dicts
            for key in self._state_names():
                t = st.get(key)
                if isinstance(t, torch.Tensor) and t.shape != p.shape:
                    st[key] = self._expand(p, t)
            sd["state"][i] = st
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
            self._words = {p: None if m is None else pack_mask(_local(m.to(p.device)))
                           for m, (_, p) in zip(new_masks, named)}
        self._zero_pruned()
        self._relayout()

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if hasattr(self, "_words"):  # after construction: new params, masks from their tags
            for p in self.param_groups[-1]["params"]:
                m = getattr(p, _MASK_ATTR, None)
                self._words[p] = None if m is None else pack_mask(_local(m))
            self._zero_pruned()
            self._relayout()

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

    def _plan(self, gi, group, build):
        """The call lists of group ``gi`` (``build(items)`` of its params with gradients),
        cached while the same params have gradients and no state or mask changed: building them
        costs a noticeable part of a small model's step. Gradients are read at every step."""
        plans = self._plans
        key = (group["momentum"] != 0 if "momentum" in group else group["amsgrad"],
               *(id(p) for p in group["params"] if p.grad is not None))
        hit = plans.get(gi)
        # valid while the state still holds the tensors the lists hold (users may reset it)
        if hit is not None and hit[0] == key and all(
                self.state.get(p, {}).get(k) is t for p, k, t in hit[2]):
            return hit[1]
        items = self._collect(group)
        plan, cacheable = build(items)
        if cacheable:
            keys = (self._state_names()[0], "step")
            check = [(p, k, st[k]) for p, _ in items if (st := self.state.get(p))
                     for k in keys if k in st]
            plans[gi] = (key, plan, check)
        return plan

    def _grads(self, ps, group):
        """The gradients of ``ps``, dense and contiguous (read anew at every step)."""
        gs = []
        for p in ps:
            g = p.grad
            if g.layout != torch.strided:
                self._collect(group)  # raises, naming the parameter
            gs.append(g if g.is_contiguous() else g.contiguous())
        return gs

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


def _buckets(items, key):
    d = defaultdict(list)
    for it in items:
        d[key(it)].append(it)
    return d.values()


_EMPTY_WORDS: dict = {}


def _empty_words(p):
    """The (shared, never written) empty word list of an unmasked tensor."""
    w = _EMPTY_WORDS.get(p.device)
    if w is None:
        w = _EMPTY_WORDS[p.device] = torch.empty(0, dtype=torch.int64, device=p.device)
    return w


class MaskedSGD(_Masked, torch.optim.SGD):
    """``torch.optim.SGD`` whose pruned weights (and momentum) stay exactly zero.

    Args:
        params: as for ``torch.optim.SGD`` (tensors, param-group dicts, or
            ``model.named_parameters()``).
        masks: keep-masks (bool, True = kept) aligned with the flat list of parameters (``None``
            entries are not masked), or ``{name: mask}`` when ``params`` are named; ``None`` takes
            the masks that :func:`sparsepai.apply_masks` recorded on the parameters.
        lr, momentum, dampening, weight_decay, nesterov, maximize: as for ``torch.optim.SGD``.

        compact_density: CPU parameters whose mask keeps at most this fraction of their
            entries store their momentum buffer compactly: a 1-D tensor of the kept entries in
            index order (``optimizer.state[p]``), so that a step touches state once per kept
            weight. ``state_dict()`` always holds torch's dense layout. 0 turns it off; ``None``
            takes the measured default (0.4 for SGD, 0.6 for AdamW with AVX-512; 0.1 and 0.15
            without).

    On kept entries the update is torch's SGD update (float32 math, also for fp16/bf16
    parameters); pruned entries of the parameters and momentum buffers are exactly 0 after every
    step, whatever the gradient holds there.
    """

    def __init__(self, params, masks, lr, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, maximize=False, *, compact_density=None):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         foreach=False, fused=False)
        self._check_compact_density(compact_density, "sgd")
        self._setup_masks(masks)

    def _state_names(self):
        return ("momentum_buffer",)

    def _build_sgd(self, group, items):
        mom = group["momentum"]
        cacheable = True
        rows = []
        for p, words in items:
            first = False
            if mom != 0:
                st = self.state[p]
                if st.get("momentum_buffer") is None:
                    st["momentum_buffer"] = self._new_state(p)
                    first = True
                    cacheable = False  # the next step is not a first one
            rows.append((p, words, first))
        plan = []
        for bucket in _buckets(rows, lambda it: (it[0].device, it[0].dtype, it[2])):
            ps = [it[0] for it in bucket]
            ws = [it[1] if it[1] is not None else _empty_words(it[0]) for it in bucket]
            bufs = [self.state[p]["momentum_buffer"] for p in ps] if mom != 0 else []
            plan.append((ps, ws, bufs, bucket[0][2],
                         masked_optim.step_function("masked_sgd_", ps)))
        return plan, cacheable

    @torch.no_grad()
    def step(self, closure=None):
        loss, groups = self._groups(closure)
        for gi, group in enumerate(groups):
            plan = self._plan(gi, group, lambda items: self._build_sgd(group, items))
            for ps, ws, bufs, first, step_fn in plan:
                ps, gs, bufs = _locals(ps), _locals(self._grads(ps, group)), _locals(bufs)
                step_fn(ps, gs, bufs, ws, group["lr"], group["momentum"], group["dampening"],
                        group["weight_decay"], group["nesterov"], group["maximize"], first)
        return loss


class MaskedAdamW(_Masked, torch.optim.AdamW):
    """``torch.optim.AdamW`` whose pruned weights (and moments) stay exactly zero.

    Args:
        params, masks: as for :class:`MaskedSGD`.
        lr, betas, eps, weight_decay, amsgrad, maximize: as for ``torch.optim.AdamW``.
        compact_density: as for :class:`MaskedSGD` (for ``exp_avg``, ``exp_avg_sq`` and
            ``max_exp_avg_sq``).
    """

    def __init__(self, params, masks, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False, *, compact_density=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, foreach=False, fused=False)
        self._check_compact_density(compact_density, "adamw")
        self._setup_masks(masks)

    def _state_names(self):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _build_adamw(self, group, items):
        amsgrad = group["amsgrad"]
        for p, _ in items:
            st = self.state[p]
            if len(st) == 0:
                st["step"] = torch.tensor(0.0, dtype=torch.float32)
                st["exp_avg"] = self._new_state(p)
                st["exp_avg_sq"] = self._new_state(p)
                if amsgrad:
                    st["max_exp_avg_sq"] = self._new_state(p)
        plan = []
        for bucket in _buckets(items, lambda it: (it[0].device, it[0].dtype)):
            ps = [it[0] for it in bucket]
            st = [self.state[p] for p in ps]
            ws = [it[1] if it[1] is not None else _empty_words(it[0]) for it in bucket]
            plan.append((ps, ws, [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st],
                         [s["max_exp_avg_sq"] for s in st] if amsgrad else [],
                         [s["step"] for s in st], masked_optim.step_function("masked_adamw_", ps)))
        return plan, True

    @torch.no_grad()
    def step(self, closure=None):
        loss, groups = self._groups(closure)
        for gi, group in enumerate(groups):
            plan = self._plan(gi, group, lambda items: self._build_adamw(group, items))
            beta1, beta2 = group["betas"]
            for ps, ws, m, v, vmax, steps_t, step_fn in plan:
                ps, gs = _locals(ps), _locals(self._grads(ps, group))
                m, v, vmax = _locals(m), _locals(v), _locals(vmax)
                torch._foreach_add_(steps_t, 1.0)
                step_fn(ps, gs, m, v, vmax, ws, torch.stack(steps_t).tolist(), group["lr"], beta1,
                        beta2, group["weight_decay"], group["eps"], group["amsgrad"],
                        group["maximize"])
        return loss
