"""Datasets: the embedded digits and the MNIST IDX test split."""

import os

import pytest
import torch

from sparsepai.experiments.data import load_dataset, loader

MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")


def test_digits_split_is_reproducible_and_disjoint():
    tr, te, info = load_dataset("digits", seed=0)
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 8)
    assert len(tr) + len(te) == 1797 and len(te) == 360
    tr2, te2, _ = load_dataset("digits", seed=0)
    assert torch.equal(tr.tensors[0], tr2.tensors[0])
    # no image is in both splits
    a = {tuple(x.flatten().tolist()) for x in tr.tensors[0][:200]}
    b = {tuple(x.flatten().tolist()) for x in te.tensors[0]}
    assert len(a & b) <= 2  # digits has a couple of exact duplicate images


def test_loader_order_follows_seed():
    tr, _, _ = load_dataset("digits")
    first = lambda s: next(iter(loader(tr, 16, shuffle=True, seed=s)))[1]  # noqa: E731
    assert torch.equal(first(1), first(1)) and not torch.equal(first(1), first(2))


@pytest.mark.skipif(not os.path.isdir(MNIST), reason="../shared/data/mnist not present")
def test_mnist_test_split_only():
    tr, te, info = load_dataset("mnist", MNIST)
    assert len(tr) == 8000 and len(te) == 2000 and info.image_size == 28
    x, y = tr[0]
    assert x.shape == (1, 28, 28) and 0 <= int(y) <= 9
    # the real labels: every class present in both splits
    assert set(tr.tensors[1].tolist()) == set(range(10)) == set(te.tensors[1].tolist())


def test_unknown_dataset():
    with pytest.raises(ValueError, match="valid datasets"):
        load_dataset("imagenet21k")
