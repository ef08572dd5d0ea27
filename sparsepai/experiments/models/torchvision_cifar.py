"""torchvision ResNets and VGGs with the small-image adaptations of the ProsPr paper."""

from __future__ import annotations

import torch


def cifar_resnet(name: str, num_classes: int, in_channels: int) -> torch.nn.Module:
    """torchvision ResNet-18/34/50 with a 3x3 stride-1 first convolution and no max-pool."""
    import torchvision

    model = getattr(torchvision.models, name)(num_classes=num_classes)
    model.conv1 = torch.nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def cifar_vgg(name: str, num_classes: int, in_channels: int) -> torch.nn.Module:
    """torchvision VGG-11/13/16/19 with batch norm, global average pooling and one linear layer."""
    import torchvision

    model = getattr(torchvision.models, f"{name}_bn")(num_classes=num_classes)
    if in_channels != 3:
        first = model.features[0]
        model.features[0] = torch.nn.Conv2d(in_channels, first.out_channels, 3, padding=1)
    model.avgpool = torch.nn.AdaptiveAvgPool2d(1)
    model.classifier = torch.nn.Linear(512, num_classes)
    return model
