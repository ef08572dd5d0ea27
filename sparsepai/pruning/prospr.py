"""ProsPr (Alizadeh et al., ICLR 2022, https://arxiv.org/abs/2202.08132): prospect pruning.

The score of a weight is the magnitude of the meta-gradient of the loss after M steps of SGD with
respect to a multiplicative mask c on the initial weights:

    w_0 = c * w_init,  w_{m+1} = w_m - lr * grad L(w_m, D_m)  (SGD, optionally with momentum),
    score = |dL(w_M, D_M) / dc| at c = 1,

differentiated through all M steps (``first_order=False``), or approximated by
|grad L(w_M, D_M) * w_init| (``first_order=True``). Every parameter takes part in the inner steps
(biases and norm parameters too; only the prunable weights are masked) and the model is in train
mode (batch statistics). Both versions run the inner steps functionally
(``torch.func.functional_call``) on copies of the parameters and buffers, so the user's model
is never stepped (it is scored in place and restored); the first-order version needs no graph
through the steps and steps its copies inside the backward passes (see :func:`_first_order`;
an FSDP2-sharded model, whose parameters cannot be replaced functionally, is stepped in place
there and put back from w_init).
``meta_steps=0`` gives SNIP's |grad L(w_0, D_0) * w_0|. The batches follow
:class:`ProsprConfig` (``same_batch=False`` by default): D_0..D_M, M + 1 distinct batches (the
paper's formulation); ``same_batch=True`` (the official code's protocol) makes D_0 serve every
step and the meta-loss. The default score is the first-order one (``first_order=True``): the
worst cells of ``benchmarks/bench_defaults_grid.py`` (docs/guides/choosing-a-method.md) chose
it; ``first_order=False`` gives the paper's full meta-gradient. ``batches=k`` makes each D_m k
consecutive batches of ``data`` (one larger batch).
"""

from __future__ import annotations

import dataclasses

import torch
from tqdm.auto import tqdm

from sparsepai.core.loss import batch_loss, loss_grads
from sparsepai.core.model import take_batches
from sparsepai.core.options import option
from sparsepai.core.registry import register
from sparsepai.pruning.second_order import second_order


@dataclasses.dataclass(frozen=True)
class ProsprConfig:
    """Args: meta_steps: M, the inner SGD steps; inner_lr, inner_momentum: the inner SGD;
    first_order: the first-order approximation |grad L(w_M, D_M) * w_init| (the default,
    unstructured and structured: on the worst cell of benchmarks/bench_defaults_grid.py it
    ties with the full meta-gradient, at about half its memory, and it runs on FSDP2-sharded
    models; docs/guides/choosing-a-method.md);
    False: the paper's full meta-gradient through the M steps;
    same_batch: the official code's protocol (mil-ad/prospr without --new-data-in-inner): the
    first batch D_0 serves every inner step and the meta-loss; False (the default, the paper's
    formulation): M + 1 distinct batches D_0..D_M;
    batches: how many batches of ``data`` make each D_m (concatenated into one larger batch);
    inner_step: ``"sgd"`` (every tensor steps with ``inner_lr``) or ``"relative"`` (a
    scale-aware step: each tensor's learning rate is ``inner_lr * |p_0| / |g_0|``, its norm at
    initialisation over its first inner gradient's, held constant through the steps, so that
    the first step moves every tensor by ``inner_lr`` of its norm whatever the layer's scale;
    plain SGD moves batch-normalised, scale-invariant weights by ``lr |g| / |w|``, 30x more in
    one layer than in the median one of a ResNet-20 at He init; tensors that start at zero,
    such as biases, step with ``inner_lr``)."""

    meta_steps: int = option(3, at_least=0)
    inner_lr: float = option(0.1, above=0)
    inner_momentum: float = option(0.0, at_least=0, below=1)
    first_order: bool = True
    same_batch: bool = False
    batches: int = option(1, at_least=1)
    inner_step: str = option("sgd", choices=("sgd", "relative"))


def step_size(p: torch.Tensor, g: torch.Tensor, cfg: ProsprConfig) -> float:
    """One tensor's inner learning rate (see ``ProsprConfig.inner_step``) from its initial value
    ``p`` and its first inner gradient ``g``."""
    if cfg.inner_step == "sgd":
        return cfg.inner_lr
    pn, gn = float(p.detach().norm()), float(g.detach().norm())
    return cfg.inner_lr * pn / gn if pn > 0 and gn > 0 else cfg.inner_lr


def step_sizes(params: list, grads: list, cfg: ProsprConfig) -> list:
    """Each tensor's inner learning rate (see :func:`step_size`), a float."""
    return [step_size(p, g, cfg) for p, g in zip(params, grads)]


def concat_batches(batches: list):
    """One ``(inputs, targets)`` batch from several, concatenated along dim 0 (inputs a tensor, a
    tuple/list of tensors or a dict of tensors; targets a tensor)."""
    xs, ys = zip(*batches)
    if isinstance(xs[0], dict):
        x = {k: torch.cat([b[k] for b in xs]) for k in xs[0]}
    elif isinstance(xs[0], (tuple, list)):
        x = tuple(torch.cat(parts) for parts in zip(*xs))
    else:
        x = torch.cat(xs)
    return x, torch.cat(ys)


def _first_order(model, names, batches, loss_fn, cfg: ProsprConfig):
    """grad L(w_M, D_M) * w_init (signed) after M plain SGD steps (no graph through the steps).

    Only what is stepped is copied: every parameter, as a leaf of its own, and the buffers
    (``torch.func.functional_call``); the user's weights stay w_init. Each copy is stepped the
    moment its gradient is complete (a post-accumulate-grad hook, as an optimizer fused into
    the backward), so no full set of gradients is ever held; in the meta-loss's backward each
    weight's gradient becomes its saliency in place (times w_init) and the stepped copy it
    replaces is released. Peak: the model, one copy of it, the activations (and the momentum).

    An FSDP2-sharded model (its parameters are ``DTensor``s that FSDP gathers itself, so they
    cannot be replaced functionally) is stepped in place by the same hooks instead: the copy is
    w_init, and each weight is put back from it the moment its meta-loss gradient is complete
    (the rest in any case on exit). Peak per rank: its shards, one copy of them, one FSDP
    unit's gradients, the activations (and the momentum).
    """
    params = dict(model.named_parameters())
    sharded = any(hasattr(p, "to_local") for p in params.values())
    if sharded:  # w: the model's own parameters; init: w_init, to score with and restore from
        w, state = params, None
        init = {n: p.detach().clone() for n, p in params.items()}
        for p in params.values():  # every parameter takes part in the inner steps
            p.requires_grad_(True)
    else:
        w = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        state, init = (w, {n: b.detach().clone() for n, b in model.named_buffers()}), None
    velocity: dict = {}
    lrs: dict = {}  # each copy's inner learning rate, set by its first gradient

    def sgd(n):
        def hook(t):
            g, t.grad = t.grad, None
            if n not in lrs:  # t is still w_init here, and g the first inner gradient
                lrs[n] = step_size(t, g, cfg)
            if cfg.inner_momentum:  # v <- momentum * v + g (v = g first), as torch.optim.SGD
                v = velocity.get(n)
                g = velocity[n] = g if v is None else v.mul_(cfg.inner_momentum).add_(g)
            with torch.no_grad():
                t.add_(g, alpha=-lrs[n])
        return hook

    out: dict = {}

    def saliency(n):
        def hook(t):
            if init is None:
                out[n] = t.grad.mul_(params[n].detach())
                t.grad = None
                t.untyped_storage().resize_(0)  # w_M of this weight is not read again
                return
            out[n] = t.grad.mul_(init[n])
            t.grad = None
            with torch.no_grad():  # FSDP has reduced this unit: its w_M is not read again
                t.copy_(init.pop(n))
        return hook

    try:
        handles = [w[n].register_post_accumulate_grad_hook(sgd(n)) for n in w]
        try:
            for m in tqdm(range(cfg.meta_steps), desc="prospr inner steps", leave=False):
                batch_loss(model, batches[m], loss_fn, f"prospr inner step {m}",
                           state=state).backward()
        finally:
            for h in handles:
                h.remove()
        velocity.clear()
        masked = set(names)
        for n, t in w.items():
            t.requires_grad_(n in masked)
        handles = [w[n].register_post_accumulate_grad_hook(saliency(n)) for n in names]
        try:
            batch_loss(model, batches[cfg.meta_steps], loss_fn, "prospr meta-loss",
                       state=state).backward()
        finally:
            for h in handles:
                h.remove()
    finally:
        if init is not None:  # the weights no meta-loss gradient reached (or all, on error)
            with torch.no_grad():
                for n, v in init.items():
                    params[n].copy_(v)
                    params[n].grad = None
    # a weight the loss does not reach has a zero gradient
    return {n: out[n] if n in out else torch.zeros_like(params[n]) for n in names}


@register("prospr", ProsprConfig, in_place=True)
def meta_gradient(model, names, data, loss_fn, cfg: ProsprConfig) -> dict:
    """The signed dL(w_M, D_M)/dc per prunable weight (first order: grad L(w_M, D_M) * w_init).

    Channel scores (structured ProsPr) sum it over each output channel: with one mask entry
    per channel broadcast over the channel's weights, dL/dc_channel is that sum.
    """
    n, k = (1 if cfg.same_batch else cfg.meta_steps + 1), cfg.batches
    batches = take_batches(data, n * k, "prospr")
    if k > 1:  # D_m: the m-th run of k consecutive batches, as one larger batch
        batches = [concat_batches(batches[i * k:(i + 1) * k]) for i in range(n)]
    if cfg.same_batch:  # D_0 = D_1 = ... = D_M
        batches = batches * (cfg.meta_steps + 1)
    model.train()
    if cfg.first_order:
        return _first_order(model, names, batches, loss_fn, cfg)
    with second_order():  # differentiates twice through every inner step (attention too)
        return _full(model, names, batches, loss_fn, cfg)


def _full(model, names, batches, loss_fn, cfg: ProsprConfig):
    init = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    masked = set(names)
    c = {n: torch.ones_like(init[n], requires_grad=True) for n in names}
    # the unmasked parameters enter the inner loop as leaves of their own
    free = {n: init[n].clone().requires_grad_(True) for n in init if n not in masked}
    w = {n: (c[n] * init[n]) if n in masked else free[n] for n in init}
    order = list(w)
    velocity = lrs = None
    for m in tqdm(range(cfg.meta_steps), desc="prospr inner steps", leave=False):
        # create_graph: the meta-gradient differentiates through every step
        grads = loss_grads(model, [w[n] for n in order], batches[m], loss_fn,
                           f"prospr inner step {m}", state=(w, buffers), create_graph=True)
        if cfg.inner_momentum:
            velocity = (list(grads) if velocity is None else
                        [cfg.inner_momentum * v + g for v, g in zip(velocity, grads)])
            step = velocity
        else:
            step = grads
        if lrs is None:  # constants of the meta-gradient, from the first inner gradient
            lrs = step_sizes([init[n] for n in order], grads, cfg)
        w = {n: w[n] - lr * s for n, s, lr in zip(order, step, lrs)}
    grads = loss_grads(model, [c[n] for n in names], batches[cfg.meta_steps], loss_fn,
                       "prospr meta-loss", state=(w, buffers))
    return {n: g.detach() for n, g in zip(names, grads)}
