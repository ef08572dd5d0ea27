"""The architectures of the pruning-at-initialization literature, by name.

``get_model(name, num_classes, in_channels, image_size)`` builds: ``resnet18/34/50`` and
``vgg11/13/16/19`` (torchvision's, batch-normalised VGG) with the CIFAR/TinyImageNet adaptations
of the ProsPr paper (ResNet: a 3x3 stride-1 first convolution and no max-pool; VGG: global
average pooling and one linear classifier), ``resnet20`` (Frankle et al. 2021), ``lenet5`` and
``smallconv`` (a small conv net for small images such as 8x8 digits).
"""

from __future__ import annotations

from sparsepai.experiments.models.small import LeNet5, ResNet20, SmallConv
from sparsepai.experiments.models.torchvision_cifar import cifar_resnet, cifar_vgg

NAMES = ("resnet18", "resnet34", "resnet50", "vgg11", "vgg13", "vgg16", "vgg19", "resnet20",
         "lenet5", "smallconv")


def get_model(name: str, num_classes: int = 10, in_channels: int = 3, image_size: int = 32):
    """Build a freshly initialized model.

    Args:
        name: one of ``NAMES``.
        num_classes: outputs of the classifier.
        in_channels: input channels (1 for MNIST/digits, 3 for CIFAR).
        image_size: input height = width (LeNet-5 and smallconv adapt their classifier to it).

    Returns:
        ``torch.nn.Module`` mapping ``(B, in_channels, image_size, image_size)`` to
        ``(B, num_classes)``.
    """
    if name.startswith("resnet") and name != "resnet20":
        return cifar_resnet(name, num_classes, in_channels)
    if name.startswith("vgg"):
        return cifar_vgg(name, num_classes, in_channels)
    if name == "resnet20":
        return ResNet20(num_classes, in_channels)
    if name == "lenet5":
        return LeNet5(num_classes, in_channels, image_size)
    if name == "smallconv":
        return SmallConv(num_classes, in_channels, image_size)
    raise ValueError(f"unknown model {name!r}; valid models: {', '.join(NAMES)}")


__all__ = ["NAMES", "LeNet5", "ResNet20", "SmallConv", "get_model"]
