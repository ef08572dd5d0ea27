"""Models and masks shared by the structured-pruning tests."""

import torch
import torchvision
from torch import nn

from sparsepai.experiments.models import get_model
from sparsepai.structured.analysis import analyse


class CatNet(nn.Module):
    """Two branches concatenated along channels (a norm over the concatenation), a residual
    pair, and a view into a linear layer: exercises cat, coupling and flatten factors."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 10, 3, padding=1, bias=False)
        self.c2 = nn.Conv2d(10, 10, 1)
        self.d = nn.Conv2d(10, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        y = torch.cat([self.a(x), torch.relu(self.b(x))], dim=1)
        y = torch.relu(self.bn(y))
        y = self.c(y)
        y = y + self.c2(torch.relu(y))
        y = nn.functional.max_pool2d(torch.relu(self.d(y)), 1)
        return self.fc(y.view(y.size(0), -1))


class ReflectNet(nn.Module):
    """A residual pair of reflect-padded convolutions: a producer that keeps fewer channels than
    the stream goes through the generic ChannelScatter, not the channel-sparse conv op."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(8)
        self.branch = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect", bias=False)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = x + self.branch(x)
        return self.fc(x.mean((2, 3)))


class GroupNet(nn.Module):
    """A grouped convolution (2 groups of 4 input and 6 output channels: pruned within its
    groups), a depthwise convolution with channel multiplier 2 (one input channel per group:
    whole groups, tied to the grouped convolution's output units) and a residual sum."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=2, bias=False)
        self.bn1 = nn.BatchNorm2d(12)
        self.dwm = nn.Conv2d(12, 24, 3, padding=1, groups=12)
        self.bn2 = nn.BatchNorm2d(24)
        self.pw = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.grouped(x)))
        y = torch.relu(self.bn2(self.dwm(y)))
        return self.fc((self.pw(y) + x).mean((2, 3)))


def mobilenet():
    m = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
    m.classifier[0].p = 0.0  # dropout draws depend on the tensor size: not comparable
    return m


# name -> (constructor, input shape)
ARCHS = {
    "resnet18": (lambda: get_model("resnet18"), (3, 16, 16)),
    "resnet34": (lambda: get_model("resnet34"), (3, 8, 8)),
    "resnet50": (lambda: get_model("resnet50"), (3, 8, 8)),
    "resnet18_imagenet": (lambda: torchvision.models.resnet18(num_classes=10), (3, 32, 32)),
    "vgg11": (lambda: get_model("vgg11"), (3, 32, 32)),
    "vgg13": (lambda: get_model("vgg13"), (3, 32, 32)),
    "vgg16": (lambda: get_model("vgg16"), (3, 32, 32)),
    "vgg19": (lambda: get_model("vgg19"), (3, 32, 32)),
    "resnet20": (lambda: get_model("resnet20"), (3, 16, 16)),
    "mobilenet_v2": (mobilenet, (3, 32, 32)),
    "lenet5": (lambda: get_model("lenet5", in_channels=1, image_size=28), (1, 28, 28)),
    "smallconv": (lambda: get_model("smallconv", in_channels=1, image_size=8), (1, 8, 8)),
    "catnet": (CatNet, (3, 8, 8)),
    "reflectnet": (ReflectNet, (3, 6, 6)),
    "groupnet": (GroupNet, (3, 6, 6)),
}


def build(name, seed=0):
    """The model with randomised batch-norm parameters and statistics (so that zeroed ones
    matter), and an input batch."""
    torch.manual_seed(seed)
    ctor, shape = ARCHS[name]
    model = ctor()
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
    x = torch.randn(4, *shape, generator=g)
    return model, x


def random_masks(model, keep=0.5, shared=True, seed=0, x=None):
    """Random channel masks: one per producer (``shared``: the same for coupled producers);
    ``x`` is the example input the graph is captured on."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for grp in analyse(model, x).prunable_groups():
        base = torch.rand(grp.size, generator=g) < keep
        base[torch.randint(grp.size, (1,), generator=g)] = True
        for p in grp.producers:
            if shared:
                m = base.clone()
            else:
                m = torch.rand(grp.size, generator=g) < keep
                m[torch.randint(grp.size, (1,), generator=g)] = True
            out[p] = grp.spread(p, m)
    return out
