"""Masked optimizers: SGD and AdamW that keep pruned weights at exactly zero.

Drop-in subclasses of ``torch.optim.SGD`` and ``torch.optim.AdamW`` (param groups, schedulers,
``zero_grad``, ``state_dict`` in the same format) whose ``step`` is one fused kernel call per
param group and dtype (``sparsepai::masked_sgd_`` / ``masked_adamw_``): each tensor is read and
written once, the mask applied inside, so pruning costs no extra passes over memory. Masks are
kept bit-packed (1 bit per weight); mask and state handling is sparsepai/optim/base.py, the
choice of each tensor's path (dense or sparse state) sparsepai/optim/paths.py.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial

import torch

from sparsepai.ops import masked_optim
from sparsepai.optim.base import _locals, _Masked


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

        path: how masked CPU tensors step (sparsepai/optim/paths.py). ``"sparse"``: the
            momentum buffer stored compactly, a 1-D tensor of the kept entries in index order
            (``optimizer.state[p]``), so that a step touches state once per kept weight;
            ``"dense"``: state in the parameter's shape, streamed like an unmasked step (what a
            step at density 1 costs); ``"auto"`` (default, or ``$SPARSEPAI_OPTIM_PATH``): each
            tensor times both on steps 2-7 and keeps the faster, so a sparse step never costs
            more than a dense one on the machine it runs on. Both give the same update, bit for
            bit; ``state_dict()`` always holds torch's dense layout. :meth:`paths` tells the
            choice.
        compact_density: only tensors keeping at most this fraction of their entries may take
            the sparse path (default 1: every masked tensor keeping fewer than all).

    On kept entries the update is torch's SGD update (float32 math, also for fp16/bf16
    parameters); pruned entries of the parameters and momentum buffers are exactly 0 after every
    step, whatever the gradient holds there.
    """

    def __init__(self, params, masks, lr, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, maximize=False, *, path=None, compact_density=None):
        self._check_lr(lr)
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                         foreach=False, fused=False)
        self._setup_options(compact_density, path)
        self._setup_masks(masks)

    _hyper = ("momentum", "dampening", "nesterov")

    def _state_names(self):
        return ("momentum_buffer",)

    def _stateful(self, group):
        return group["momentum"] != 0

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
            self._run_calls(gi, group, partial(self._build_sgd, group),
                            partial(self._call_sgd, group))
        self._end_step()
        return loss

    def _call_sgd(self, group, call):
        ps, ws, bufs, first, step_fn = call
        ps, gs, bufs = _locals(ps), _locals(self._grads(ps, group)), _locals(bufs)
        if torch.compiler.is_compiling():  # one opaque op, whatever the backend
            step_fn = masked_optim.compiled_masked_sgd_
        step_fn(ps, gs, bufs, ws, group["lr"], group["momentum"], group["dampening"],
                group["weight_decay"], group["nesterov"], group["maximize"], first)


class MaskedAdamW(_Masked, torch.optim.AdamW):
    """``torch.optim.AdamW`` whose pruned weights (and moments) stay exactly zero.

    Args:
        params, masks: as for :class:`MaskedSGD`.
        lr, betas, eps, weight_decay, amsgrad, maximize: as for ``torch.optim.AdamW``.
        path, compact_density: as for :class:`MaskedSGD` (for ``exp_avg``, ``exp_avg_sq`` and
            ``max_exp_avg_sq``).
    """

    def __init__(self, params, masks, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, maximize=False, *, path=None, compact_density=None):
        self._check_lr(lr)
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, foreach=False, fused=False)
        self._setup_options(compact_density, path)
        self._setup_masks(masks)

    _hyper = ("betas", "eps", "amsgrad")

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
            self._run_calls(gi, group, partial(self._build_adamw, group),
                            partial(self._call_adamw, group))
        self._end_step()
        return loss

    def _call_adamw(self, group, call):
        ps, ws, m, v, vmax, steps_t, step_fn = call
        ps, gs = _locals(ps), _locals(self._grads(ps, group))
        m, v, vmax = _locals(m), _locals(v), _locals(vmax)
        torch._foreach_add_(steps_t, 1.0)
        beta1, beta2 = group["betas"]
        args = (group["lr"], beta1, beta2, group["weight_decay"], group["eps"], group["amsgrad"],
                group["maximize"])
        if torch.compiler.is_compiling():  # the counts stay tensors (see compiled_masked_adamw_)
            masked_optim.compiled_masked_adamw_(ps, gs, m, v, vmax, ws, steps_t, *args)
        else:
            step_fn(ps, gs, m, v, vmax, ws, torch.stack(steps_t).tolist(), *args)
