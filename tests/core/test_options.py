"""Method options are checked before any work: a wrong type is a TypeError and a value out of
range a ValueError, each naming the method and the option, raised before the data is read or
the model is run."""

import pytest
import torch

import sparsepai as sp
from tests.tiny_nets import batches, mlp


class Untouchable:
    """Data that fails the test if anything reads it."""

    def __iter__(self):
        raise AssertionError("the data was read before the options were checked")


def guarded_model():
    model = mlp()
    model.register_forward_pre_hook(lambda *a: pytest.fail("the model ran before the check"))
    return model


BAD = [
    # (method, options, error, message)
    ("snip", {"batches": 0}, ValueError, r"method 'snip': option 'batches' must be >= 1, got 0"),
    ("grasp", {"batches": 0}, ValueError, r"method 'grasp': option 'batches' must be >= 1"),
    ("grasp", {"temperature": 0}, ValueError, r"method 'grasp': option 'temperature' must be > 0"),
    ("grasp", {"temperature": "hot"}, TypeError, r"method 'grasp': option 'temperature' must be "
                                                 r"float, got str 'hot'"),
    ("synflow", {"rounds": 0}, ValueError, r"method 'synflow': option 'rounds' must be >= 1"),
    ("synflow", {"rounds": 2.0}, TypeError, r"method 'synflow': option 'rounds' must be int"),
    ("synflow", {"input_shape": "4"}, TypeError, r"option 'input_shape' must be tuple or None"),
    ("force", {"iterations": 0}, ValueError, r"method 'force': option 'iterations' must be >= 1"),
    ("force", {"batches": -2}, ValueError, r"method 'force': option 'batches' must be >= 1"),
    ("prospr", {"meta_steps": "3"}, TypeError, r"method 'prospr': option 'meta_steps' must be "
                                               r"int, got str '3'"),
    ("prospr", {"meta_steps": 2.5}, TypeError, r"option 'meta_steps' must be int, got float 2.5"),
    ("prospr", {"meta_steps": True}, TypeError, r"option 'meta_steps' must be int, got bool"),
    ("prospr", {"meta_steps": -1}, ValueError, r"option 'meta_steps' must be >= 0, got -1"),
    ("prospr", {"inner_lr": float("nan")}, ValueError, r"option 'inner_lr' must be finite"),
    ("prospr", {"inner_lr": 0.0}, ValueError, r"option 'inner_lr' must be > 0"),
    ("prospr", {"inner_momentum": 1.0}, ValueError, r"option 'inner_momentum' must be in \[0, 1\)"),
    ("prospr", {"first_order": 1}, TypeError, r"option 'first_order' must be bool, got int"),
    ("random", {"seed": 1.5}, TypeError, r"method 'random': option 'seed' must be int"),
    ("autosparse", {"unseen_layers": "guess"}, ValueError,
     r"option 'unseen_layers' must be one of \['error', 'predict'\]"),
    ("autosparse", {"chunk_size": 0}, ValueError, r"option 'chunk_size' must be >= 1"),
    ("lottery", {"rate": 1.5}, ValueError, r"method 'lottery': option 'rate' must be in \(0, 1\)"),
    ("lottery", {"epochs": 0}, ValueError, r"method 'lottery': option 'epochs' must be >= 1"),
    ("snip", {"meta_steps": 3}, TypeError, r"method 'snip' has no options \['meta_steps'\]"),
]


@pytest.mark.parametrize("method,options,error,message", BAD,
                         ids=[f"{m}-{next(iter(o))}={o[next(iter(o))]!r}" for m, o, _, _ in BAD])
@pytest.mark.parametrize("entry", ["score", "prune"])
def test_bad_options_fail_before_any_work(entry, method, options, error, message):
    call = sp.score if entry == "score" else lambda *a, **k: sp.prune(a[0], a[1], 0.5, *a[2:], **k)
    with pytest.raises(error, match=message):
        call(guarded_model(), method, Untouchable(), **options)


@pytest.mark.parametrize("options,error,message", [
    ({"scope": "model"}, ValueError, r"prune: scope must be 'global' or 'layer', got 'model'"),
    ({"min_per_layer": "3"}, TypeError, r"prune: min_per_layer must be an int, got str"),
    ({"min_per_layer": -1}, ValueError, r"prune: min_per_layer must be >= 0"),
    ({"min_per_layer": 2, "scope": "layer"}, ValueError, r"goes with scope='global'"),
    ({"min_per_layer": 20}, ValueError, r"min_per_layer=20 keeps 35 weights, more than the 17"),
    ({"prunable": "0.weight"}, TypeError, r"option 'prunable' must be a sequence of parameter"),
])
def test_bad_thresholding_options_fail_before_any_work(options, error, message):
    with pytest.raises(error, match=message):
        sp.prune(guarded_model(), "snip", 0.5, Untouchable(), **options)


def test_good_options_are_converted():
    model = mlp()
    data = batches(2)
    # an int where a float is expected, a list where a tuple is expected
    a = sp.score(model, "grasp", data, temperature=200)
    b = sp.score(model, "grasp", data, temperature=200.0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    s = sp.score(model, "synflow", input_shape=[4], rounds=1)
    assert set(s) == {"0.weight", "2.weight"}
