"""group= argument errors that need no process group: clear one-line errors, nothing run."""

import pytest
import torch
import torch.distributed as dist

import sparsepai as sp


def _net():
    return torch.nn.Sequential(torch.nn.Linear(4, 3)).double()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_group_without_initialized_distributed_is_a_clear_error():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match=r"sparsepai.prune: group= needs torch.distributed "
                                         "initialized"):
        sp.prune(_net(), "magnitude", 0.5, group=object())
    with pytest.raises(ValueError, match=r"sparsepai.score: group= needs"):
        sp.score(_net(), "magnitude", group=object())


def test_sync_is_inert_outside_a_group_call():
    from sparsepai.distributed.replicated import sync_gradients_of

    model = _net()
    assert sync_gradients_of(model) is model
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_digest_is_exact_and_order_sensitive():
    from sparsepai._comm import digest

    a = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    b = torch.tensor([0.0, 2.0, 1.0], dtype=torch.float64)
    assert digest([a]) == digest([a.clone()])
    assert digest([a]) != digest([b])
    assert digest([a]) != digest([torch.nextafter(a, a + 1)])
    assert digest([a, b]) != digest([b, a])
    assert digest([torch.tensor([True, False])]) != digest([torch.tensor([False, True])])
