"""The masked optimizers refuse bad arguments in their constructors and ``load_state_dict``
with one line naming the argument, before anything is changed."""

import math

import pytest
import torch

from sparsepai.optim import MaskedAdamW, MaskedSGD


def _model():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3)


def _masks(model):
    return [torch.rand_like(p) > 0.5 for p in model.parameters()]


@pytest.mark.parametrize("cls", [MaskedSGD, MaskedAdamW])
def test_bad_masks(cls):
    m = _model()
    with pytest.raises(TypeError, match=f"{cls.__name__}: masks must be a list of bool tensors"
                                        ".*got int"):
        cls(m.parameters(), 3, lr=0.1)
    with pytest.raises(TypeError, match="got a single tensor"):
        cls(m.parameters(), torch.ones(3, 4, dtype=torch.bool), lr=0.1)
    # a mask of the wrong rank: named, with both shapes
    with pytest.raises(ValueError, match=r"the mask of .*\[0\]\W* has shape \(12,\), the "
                                         r"parameter \(3, 4\)"):
        cls(m.parameters(), [torch.ones(12, dtype=torch.bool), None], lr=0.1)


@pytest.mark.parametrize("cls", [MaskedSGD, MaskedAdamW])
def test_bad_learning_rates(cls):
    m = _model()
    with pytest.raises(TypeError, match=f"{cls.__name__}: lr must be a number, got str '0.1'"):
        cls(m.parameters(), _masks(m), lr="0.1")
    for bad in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match=f"{cls.__name__}: lr must be a finite number >= 0"):
            cls(m.parameters(), _masks(m), lr=bad)


def _stepped(cls, m):
    opt = cls(m.parameters(), _masks(m), lr=0.1, **({"momentum": 0.9} if cls is MaskedSGD
                                                    else {}))
    m(torch.randn(2, 4)).sum().backward()
    opt.step()
    return opt


def test_load_state_dict_refuses_none_and_another_optimizer():
    m = _model()
    sgd = _stepped(MaskedSGD, m)
    before = {k: v.clone() if torch.is_tensor(v) else v
              for k, v in sgd.state[next(iter(m.parameters()))].items()}
    with pytest.raises(TypeError, match="MaskedSGD.load_state_dict: state_dict must be the dict "
                                        "of an optimizer's state_dict\\(\\), got NoneType"):
        sgd.load_state_dict(None)
    adamw_sd = _stepped(MaskedAdamW, _model()).state_dict()
    with pytest.raises(ValueError, match=r"MaskedSGD.load_state_dict: the state dict is from "
                                         r"another optimizer \(its parameter groups lack "
                                         r"\['momentum', 'dampening', 'nesterov'\]\)"):
        sgd.load_state_dict(adamw_sd)
    after = sgd.state[next(iter(m.parameters()))]
    assert torch.equal(after["momentum_buffer"], before["momentum_buffer"])
    assert sgd.param_groups[0]["momentum"] == 0.9
    with pytest.raises(ValueError, match="MaskedAdamW.load_state_dict: the state dict is from "
                                         "another optimizer"):
        _stepped(MaskedAdamW, _model()).load_state_dict(sgd.state_dict())
    sgd.load_state_dict(sgd.state_dict())  # its own loads
