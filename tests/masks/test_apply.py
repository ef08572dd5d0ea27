"""``sp.apply_masks`` records each mask under the public ``MASK_ATTR``, where the masked
optimizers find it, and checks every mask before changing anything."""

import pytest
import torch

import sparsepai as sp
from sparsepai.masks import MASK_ATTR, apply_masks
from tests.tiny_nets import mlp


def test_masks_recorded_where_the_optimizers_look():
    model = mlp()
    masks = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(i)) < 0.5
             for i, (n, p) in enumerate(model.named_parameters()) if p.dim() > 1}
    assert apply_masks(model, masks) is model and model.sparsepai_masks.keys() == masks.keys()
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert getattr(params[name], MASK_ATTR) is not None
        assert bool((params[name][~m] == 0).all())
    opt = sp.optim.MaskedSGD(model.named_parameters(), None, lr=0.5)  # masks from MASK_ATTR
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for name, m in masks.items():
        assert bool((params[name][~m] == 0).all()) and bool((params[name][m] != 0).all())


def test_bad_masks_change_nothing():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(n for n, p in model.named_parameters() if p.dim() > 1)
    shape = dict(model.named_parameters())[name].shape
    with pytest.raises(TypeError, match=f"apply_masks: the mask of '{name}' must be a bool"):
        apply_masks(model, {name: torch.ones(shape)})
    with pytest.raises(ValueError, match=r"apply_masks: the model has no parameters named "
                                         r"\['nope'\]"):
        apply_masks(model, {"nope": torch.ones(3, 3, dtype=torch.bool)})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(model, "sparsepai_masks")
