"""Mask and state-layout handling shared by the masked optimizers (a mixin over a torch.optim
class): masks given or recorded, packed to bits; state in the parameter's shape or compact (the
kept entries only) as each tensor's path says (sparsepai/optim/paths.py); torch's state-dict
format either way; the per-group call lists the steps run, and the measuring steps' timed calls.
"""

from __future__ import annotations

from typing import Mapping

import torch

from sparsepai.masks.apply import MASK_ATTR as _MASK_ATTR
from sparsepai.ops.bits import pack_mask, unpack_mask
from sparsepai.ops import masked_optim
from sparsepai.optim.paths import PathChooser, resolve_path


def _local(t):
    """The local shard of an FSDP2 ``DTensor`` (parameter, gradient, state or mask), which is
    what the kernels and the packed mask words see; other tensors as they are."""
    return t.to_local() if hasattr(t, "to_local") else t


def _locals(ts):
    return [_local(t) for t in ts]


class _Masked:
    """Mask handling shared by the masked optimizers (a mixin over a torch.optim class)."""

    _op_name: str
    _hyper: tuple = ()  # the group options only this algorithm has (a state dict must carry)

    @classmethod
    def _check_lr(cls, lr) -> None:
        """A clear error for a learning rate that is not a finite number >= 0 (torch compares a
        string with ``<`` and accepts NaN, which makes every weight NaN at the first step)."""
        import math

        if isinstance(lr, bool) or not isinstance(lr, (int, float)):
            raise TypeError(f"{cls.__name__}: lr must be a number, got {type(lr).__name__} "
                            f"{lr!r}")
        if not (math.isfinite(lr) and lr >= 0):
            raise ValueError(f"{cls.__name__}: lr must be a finite number >= 0, got {lr}")

    def _setup_options(self, compact_density, path):
        cls = type(self).__name__
        if compact_density is None:
            compact_density = 1.0
        if not 0.0 <= float(compact_density) <= 1.0:
            raise ValueError(f"{cls}: compact_density must be in [0, 1], got {compact_density}")
        self._compact_density = float(compact_density)
        self._chooser = PathChooser(resolve_path(cls, path))

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

    def _is_compact(self, p) -> bool:
        """Whether ``p``'s state is stored compactly (its kept entries only, in index order):
        where it may (:meth:`_may_compact`) and its path (sparsepai/optim/paths.py) is sparse."""
        return self._may_compact(p) and self._chooser.compact(p)

    def _may_compact(self, p) -> bool:
        """Whether ``p`` may take either path: masked, on the CPU, where the chosen kernel reads
        compact state (the C++ CPU kernels and the references), keeping fewer than all and at most
        ``compact_density`` of its entries."""
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
            if isinstance(masks, torch.Tensor) or not hasattr(masks, "__iter__"):
                what = ("a single tensor (pass a list, one mask per parameter)"
                        if isinstance(masks, torch.Tensor) else type(masks).__name__)
                raise TypeError(f"{cls}: masks must be a list of bool tensors (None: unmasked), "
                                f"a {{name: mask}} dict, or None; got {what}")
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
            # counted here, eagerly, for _kept_count: a count read inside a compiled step would
            # be data-dependent
            self._kept_counts[p] = (words, int(keep.sum()))
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
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{cls}.load_state_dict: state_dict must be the dict of an "
                            f"optimizer's state_dict(), got {type(state_dict).__name__}")
        named = list(self._named_params())
        # Check everything before touching anything: nothing half-loaded.
        groups = state_dict.get("param_groups", [])
        for g in groups:
            missing = [k for k in self._hyper if k not in g]
            if missing:
                raise ValueError(f"{cls}.load_state_dict: the state dict is from another "
                                 f"optimizer (its parameter groups lack {missing})")
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
            self._chooser.reset()  # measured for other masks
        self._zero_pruned()
        self._relayout()

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        if hasattr(self, "_words"):  # after construction: new params, masks from their tags
            for p in self.param_groups[-1]["params"]:
                m = getattr(p, _MASK_ATTR, None)
                self._words[p] = None if m is None else pack_mask(_local(m))
            self._chooser.reset()  # measure the new tensors too
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

    def _stateful(self, group) -> bool:
        """Whether the group's tensors have state (the layouts differ only there)."""
        return True

    def _calls(self, gi, group, build):
        """The call lists of group ``gi`` for this step, each with the tensor it times (or None).

        Outside the measuring steps: the cached plan (:meth:`_plan`), untimed. In a measuring step
        each tensor that may take either path gets a call list of its own, timed, and the others
        one together.
        """
        if not self._chooser.measuring() or not self._stateful(group):
            yield self._plan(gi, group, build), None
            return
        items = self._collect(group)
        timed = [it for it in items if self._may_compact(it[0])]
        ids = {id(it[0]) for it in timed}
        rest = [it for it in items if id(it[0]) not in ids]
        if rest:
            yield build(rest)[0], None
        for it in timed:
            yield build([it])[0], it[0]

    def _run_calls(self, gi, group, build, run):
        """Runs ``run(call)`` over the calls of :meth:`_calls`, timing the measured ones.

        Only the measuring steps read the clock: once the paths are chosen a step calls no
        timer, so ``torch.compile(opt.step, fullgraph=True)`` can trace it."""
        for plan, p in self._calls(gi, group, build):
            if p is None:
                for call in plan:
                    run(call)
                continue
            clock = self._chooser.clock
            t0 = clock()
            for call in plan:
                run(call)
            self._chooser.record(p, clock() - t0)

    def _end_step(self):
        if self._chooser.end_step():
            self._relayout()

    def paths(self) -> list:
        """The step path of each parameter, in parameter order: ``"sparse"`` (compact state,
        kept entries only), ``"dense"`` (state in the parameter's shape, streamed), or
        ``"measuring"`` during the first steps of ``path="auto"``. Tensors that cannot take the
        sparse path (unmasked, fully kept, not on the CPU, without state) report ``"dense"``."""
        out = []
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                ok = self._may_compact(p) and self._stateful(group)
                out.append(self._chooser.path_of(p) if ok else "dense")
        return out

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
