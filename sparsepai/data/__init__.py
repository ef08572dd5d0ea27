"""Datasets, by name. The embedded default is scikit-learn's bundled handwritten digits (real
data, no download).

``load_dataset(name, data_root=None, download=False, seed=0)`` returns ``(train, test, info)``:
two ``torch.utils.data.Dataset`` of ``(image, label)`` and a :class:`DatasetInfo`.

- ``digits``: 1,797 8x8 grey images (scikit-learn), split 80/20 with a seeded permutation.
- ``mnist``: from ``data_root``: a folder of IDX files. With the full dataset, torchvision's
  train/test; with only the test split (``t10k-*``, as ``../shared/data/mnist`` has), the first
  8,000 images train and the last 2,000 evaluate.
- ``cifar10``, ``cifar100``: torchvision, from ``data_root`` (``download=True`` to fetch).
- ``tinyimagenet``: ``data_root/tiny-imagenet-200/{train,val}`` as image folders.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import torch
from torch.utils.data import TensorDataset

NAMES = ("digits", "mnist", "cifar10", "cifar100", "tinyimagenet")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_channels: int
    image_size: int


def _digits(seed):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    x = (x - x.mean()) / x.std()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(y))
    tr, te = perm[:cut], perm[cut:]
    return (TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te]),
            DatasetInfo("digits", 10, 1, 8))


def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(dims)


def _find(root, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(root, name)
        if os.path.exists(p):
            return p
    return None


def _mnist(root, download):
    if root is None:
        raise ValueError("mnist needs --data-root (a folder of IDX files)")
    test_x, test_y = _find(root, "t10k-images-idx3-ubyte"), _find(root, "t10k-labels-idx1-ubyte")
    train_x = _find(root, "train-images-idx3-ubyte")
    norm = lambda x: ((x.float() / 255.0) - 0.1307) / 0.3081  # noqa: E731
    info = DatasetInfo("mnist", 10, 1, 28)
    if test_x and test_y and not train_x:
        # only the test split: first 8,000 train, last 2,000 evaluate
        x = norm(_read_idx(test_x)).unsqueeze(1)
        y = _read_idx(test_y).long()
        return TensorDataset(x[:8000], y[:8000]), TensorDataset(x[8000:], y[8000:]), info
    import torchvision

    tf = torchvision.transforms
    t = tf.Compose([tf.ToTensor(), tf.Normalize((0.1307,), (0.3081,))])
    return (torchvision.datasets.MNIST(root, train=True, transform=t, download=download),
            torchvision.datasets.MNIST(root, train=False, transform=t, download=download), info)


def _cifar(name, root, download):
    import torchvision

    if root is None:
        raise ValueError(f"{name} needs --data-root")
    tf = torchvision.transforms
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    train_t = tf.Compose([tf.RandomCrop(32, padding=4), tf.RandomHorizontalFlip(), tf.ToTensor(),
                          tf.Normalize(mean, std)])
    test_t = tf.Compose([tf.ToTensor(), tf.Normalize(mean, std)])
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    return (cls(root, train=True, transform=train_t, download=download),
            cls(root, train=False, transform=test_t, download=download),
            DatasetInfo(name, 10 if name == "cifar10" else 100, 3, 32))


def _tinyimagenet(root):
    import torchvision

    if root is None:
        raise ValueError("tinyimagenet needs --data-root")
    base = os.path.join(root, "tiny-imagenet-200")
    tf = torchvision.transforms
    t = tf.Compose([tf.ToTensor(), tf.Normalize((0.480, 0.448, 0.398), (0.277, 0.269, 0.282))])
    return (torchvision.datasets.ImageFolder(os.path.join(base, "train"), transform=t),
            torchvision.datasets.ImageFolder(os.path.join(base, "val"), transform=t),
            DatasetInfo("tinyimagenet", 200, 3, 64))


def load_dataset(name: str, data_root: str | None = None, download: bool = False, seed: int = 0):
    """``(train, test, info)`` for a dataset name (see the module docstring)."""
    if name == "digits":
        return _digits(seed)
    if name == "mnist":
        return _mnist(data_root, download)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, data_root, download)
    if name == "tinyimagenet":
        return _tinyimagenet(data_root)
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(NAMES)}")


def loader(dataset, batch_size: int, shuffle: bool, seed: int = 0):
    """A DataLoader whose shuffling is reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                       generator=g, drop_last=False)
