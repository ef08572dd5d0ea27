"""Data given as a one-shot iterator (a generator) gives every method exactly what the same
batches as a list give: methods that read the data more than once (iterative rounds, a cost
probe before structured scores, training epochs) used to see the rest of a half-consumed
stream, or nothing."""

import pytest
import torch

import sparsepai as sp
from sparsepai.core.model import Replay, reiterable
from tests.tiny_nets import batches, convnet, mlp

METHODS = ["random", "magnitude", "snip", "grasp", "synflow", "force", "prospr"]


def _gen(data):
    yield from data


def _same(a, b):
    assert list(a) == list(b)
    for n in a:
        assert torch.equal(a[n], b[n]), n


@pytest.mark.parametrize("method", METHODS)
def test_unstructured_methods(method):
    data = batches(6)
    _same(sp.prune(mlp(), method, 0.6, _gen(data)), sp.prune(mlp(), method, 0.6, data))


@pytest.mark.parametrize("method", ["snip", "prospr"])
def test_structured_methods(method):
    data = batches(4, shape=(1, 8, 8), classes=10, dtype=torch.float32)
    _same(sp.prune(convnet(), method, 0.5, _gen(data), structured=True),
          sp.prune(convnet(), method, 0.5, data, structured=True))


def test_after_training_epochs():
    data = batches(3)
    opts = dict(epochs=2, lr=0.1, rate=0.5)
    _same(sp.prune(mlp(), "lottery", 0.75, _gen(data), **opts),
          sp.prune(mlp(), "lottery", 0.75, data, **opts))
    _same(sp.prune(mlp(), "magnitude_after_training", 0.5, _gen(data), **opts),
          sp.prune(mlp(), "magnitude_after_training", 0.5, data, **opts))


def test_replay_draws_lazily_and_repeats():
    drawn = []

    def source():
        for i in range(5):
            drawn.append(i)
            yield i

    r = reiterable(source())
    assert isinstance(r, Replay)
    assert next(iter(r)) == 0 and drawn == [0]  # only what was read
    assert list(r) == [0, 1, 2, 3, 4] and list(r) == [0, 1, 2, 3, 4]
    assert drawn == [0, 1, 2, 3, 4]
    data = [1, 2]
    assert reiterable(data) is data and reiterable(None) is None
