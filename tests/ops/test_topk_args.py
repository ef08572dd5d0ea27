"""Argument errors of ``sp.topk_mask`` / ``sp.kth_largest`` that used to be unclear: meta
tensors (no values to rank) and a ``largest`` that is not a bool."""

import pytest
import torch

import sparsepai as sp


@pytest.mark.parametrize("fn", [sp.topk_mask, sp.kth_largest])
def test_meta_tensors(fn):
    scores = [torch.empty(5, device="meta"), torch.empty(3, device="meta")]
    with pytest.raises(ValueError, match=rf"sparsepai.{fn.__name__}: scores\[0\] is on the meta "
                                         "device"):
        fn(scores, 2)


@pytest.mark.parametrize("fn", [sp.topk_mask, sp.kth_largest])
@pytest.mark.parametrize("largest", ["no", None, 1, torch.tensor(True)])
def test_largest_must_be_a_bool(fn, largest):
    with pytest.raises(TypeError, match=f"sparsepai.{fn.__name__}: largest must be True or "
                                        "False"):
        fn([torch.rand(5)], 2, largest=largest)
