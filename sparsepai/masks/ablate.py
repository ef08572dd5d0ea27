"""Sanity checks for pruning-at-initialisation masks (Frankle et al., ICLR 2021, "Pruning Neural
Networks at Initialization: Why are We Missing the Mark?", https://arxiv.org/abs/2009.08576).

A mask that still trains as well when its kept positions are shuffled within each layer, or when
the weights under it are drawn afresh, carries no more than its per-layer densities. Three
ablations, each deterministic (given ``seed`` where it draws):

- :func:`shuffle_masks`: the same number of kept entries per layer, at random positions
  (channel masks: channels permuted);
- :func:`reinit_`: the same masks on freshly initialised weights;
- :func:`invert_masks`: per layer, the *lowest*-scored entries, as many as the mask keeps.

Masks are ``{name: bool tensor}``: unstructured (one per weight, its shape) or channel masks
(``sp.prune(..., structured=True)``: one 1-D mask per module). Channel masks that are equal
(layers coupled by a residual sum share one mask) are permuted alike, so coupled layers stay
coupled.
"""

from __future__ import annotations

import torch

ABLATIONS = ("shuffle", "reinit", "invert")


def _check_masks(fn: str, masks) -> None:
    if not isinstance(masks, dict) or not masks:
        raise ValueError(f"{fn}: masks must be a non-empty dict {{name: bool tensor}}, got "
                         f"{type(masks).__name__}")
    for name, m in masks.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            raise ValueError(f"{fn}: masks[{name!r}] must be a bool tensor, got "
                             f"{getattr(m, 'dtype', type(m).__name__)}")


def _seed(fn: str, seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"{fn}: seed must be an int, got {seed!r}")
    return seed


def shuffle_masks(masks: dict, seed: int = 0) -> dict:
    """Each mask's kept entries moved to random positions of the same tensor.

    Args:
        masks: ``{name: bool tensor}``, unstructured or channel masks.
        seed: the permutations' generator seed (same seed, same result).

    Returns:
        New masks, same keys, shapes and devices, each with exactly as many True entries as
        before. 1-D masks equal to each other (coupled channel masks) get one permutation.

    Example:
        >>> m = {"fc.weight": torch.tensor([[True, False], [False, False]])}
        >>> int(shuffle_masks(m, seed=1)["fc.weight"].sum())
        1
    """
    _check_masks("shuffle_masks", masks)
    g = torch.Generator().manual_seed(_seed("shuffle_masks", seed))
    out, shared = {}, []  # shared: (1-D mask, its shuffle) of the coupled channel masks seen
    for name, m in masks.items():
        if m.dim() == 1:
            same = next((s for k, s in shared if k.shape == m.shape and torch.equal(k, m.cpu())),
                        None)
            if same is not None:
                out[name] = same.to(m.device)
                continue
        perm = torch.randperm(m.numel(), generator=g)
        flat = m.detach().flatten().cpu()
        out[name] = flat[perm].reshape(m.shape).to(m.device)
        if m.dim() == 1:
            shared.append((m.cpu(), out[name].cpu()))
    return out


def invert_masks(scores: dict, masks: dict) -> dict:
    """Per layer, keep the entries with the lowest scores, as many as ``masks`` keeps there.

    Args:
        scores: ``{name: scores}`` (``sp.score``'s, or channel scores), higher = more
            important, shaped like the masks.
        masks: ``{name: bool tensor}``: the per-layer counts to keep.

    Returns:
        New masks: in each layer the ``masks[name].sum()`` lowest-scored entries (ties broken by
        position, first first), so deterministic.

    Example:
        >>> s = {"w": torch.tensor([0.3, 0.1, 0.9])}
        >>> invert_masks(s, {"w": torch.tensor([False, False, True])})["w"].tolist()
        [False, True, False]
    """
    _check_masks("invert_masks", masks)
    if not isinstance(scores, dict):
        raise ValueError(f"invert_masks: scores must be a dict {{name: tensor}}, got "
                         f"{type(scores).__name__}")
    missing = [n for n in masks if n not in scores]
    if missing:
        raise ValueError(f"invert_masks: scores has no entry for {missing[:3]}")
    out = {}
    for name, m in masks.items():
        s = scores[name]
        if not isinstance(s, torch.Tensor) or s.shape != m.shape:
            raise ValueError(f"invert_masks: scores[{name!r}] must be a tensor shaped "
                             f"{tuple(m.shape)}, got {getattr(s, 'shape', type(s).__name__)}")
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"invert_masks: scores[{name!r}] has non-finite values")
        k = int(m.sum())
        order = torch.argsort(s.detach().flatten().float().cpu(), stable=True)
        keep = torch.zeros(m.numel(), dtype=torch.bool)
        keep[order[:k]] = True
        out[name] = keep.reshape(m.shape).to(m.device)
    return out


def reinit_(model: torch.nn.Module, masks: dict | None = None, *, seed: int = 0,
            init=None) -> torch.nn.Module:
    """Fresh weights for ``model``, in place, from its own initialisation; masks re-applied.

    Args:
        model: the network.
        masks: keep-masks to apply to the new weights (``sp.apply_masks``: pruned weights
            zeroed, the masks recorded); they are not changed. None: no masks applied.
        seed: the seed of the new weights (the global random state is left as it was).
        init: ``init(model)`` draws the new weights; default: every submodule's
            ``reset_parameters()`` (PyTorch's layer init). A model initialised otherwise (e.g.
            He-normal) should pass the function that initialised it, so that only the draw
            changes, not the distribution.

    Returns:
        ``model``.

    Example:
        >>> net = torch.nn.Linear(4, 2)
        >>> m = {"weight": torch.ones(2, 4, dtype=torch.bool)}
        >>> old = net.weight.detach().clone()
        >>> _ = reinit_(net, m, seed=1)
        >>> bool(torch.equal(old, net.weight))
        False
    """
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"reinit_: model must be a torch.nn.Module, got {type(model).__name__}")
    if masks is not None:
        _check_masks("reinit_", masks)
    if init is not None and not callable(init):
        raise ValueError(f"reinit_: init must be callable, got {type(init).__name__}")
    seed = _seed("reinit_", seed)
    devices = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        if init is None:
            for m in model.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        else:
            init(model)
    if masks is not None:
        from sparsepai.masks.apply import apply_masks

        apply_masks(model, masks)
    return model
