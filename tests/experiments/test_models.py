"""Every listed architecture builds, maps inputs to logits, and every pruning method runs on it
(small budgets: shapes and exact counts, not training)."""

import pytest
import torch

import sparsepai as sp
from sparsepai.experiments.models import NAMES, get_model

CASES = {  # name: (in_channels, image_size)
    "resnet18": (3, 32), "resnet34": (3, 32), "resnet50": (3, 32),
    "vgg11": (3, 32), "vgg13": (3, 32), "vgg16": (3, 32), "vgg19": (3, 32),
    "resnet20": (3, 32), "lenet5": (1, 28), "smallconv": (1, 8),
}
LIGHT = {"synflow": {"rounds": 2}, "force": {"iterations": 2}, "prospr": {"meta_steps": 1},
         "prospr_first_order": {"meta_steps": 1, "first_order": True},
         "lottery": {"epochs": 1, "rate": 0.5}, "magnitude_after_training": {"epochs": 1}}


def test_every_name_is_covered():
    assert set(CASES) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shape(name):
    c, s = CASES[name]
    torch.manual_seed(0)
    model = get_model(name, num_classes=7, in_channels=c, image_size=s)
    assert model(torch.randn(2, c, s, s)).shape == (2, 7)


def test_cifar_adaptations():
    r = get_model("resnet18")
    assert r.conv1.kernel_size == (3, 3) and r.conv1.stride == (1, 1)
    assert isinstance(r.maxpool, torch.nn.Identity)
    v = get_model("vgg16")
    assert isinstance(v.classifier, torch.nn.Linear) and v.classifier.in_features == 512
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in v.modules()) == 13
    r20 = get_model("resnet20")
    convs = [m for m in r20.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == 19  # 1 + 9 blocks * 2


@pytest.mark.parametrize("method", ["random", "magnitude", "snip", "grasp", "synflow", "force",
                                    "prospr"])
@pytest.mark.parametrize("name", NAMES)
def test_every_method_on_every_architecture(name, method):
    c, s = CASES[name]
    torch.manual_seed(0)
    model = get_model(name, num_classes=5, in_channels=c, image_size=s)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, c, s, s, generator=g), torch.randint(0, 5, (2,), generator=g))
            for _ in range(3)]
    masks = sp.prune(model, method.replace("_first_order", ""), 0.9, data, **LIGHT.get(method, {}))
    params = dict(model.named_parameters())
    n = sum(params[k].numel() for k in masks)
    assert sum(int(m.sum()) for m in masks.values()) == n - round(0.9 * n)
    assert all(m.shape == params[k].shape for k, m in masks.items())


@pytest.mark.parametrize("method", ["prospr_first_order", "lottery", "magnitude_after_training"])
@pytest.mark.parametrize("name", ["resnet20", "lenet5", "smallconv"])
def test_more_methods_on_the_small_architectures(name, method):
    # first-order ProsPr's other code path, and the baselines that train (one step per batch
    # per round); prospr above already runs every large architecture
    test_every_method_on_every_architecture(name, method)

