"""Datasets, by name. The embedded default is scikit-learn's bundled handwritten digits (real
data, no download).

``load_dataset(name, data_root=None, download=False, seed=0)`` returns ``(train, test, info)``:
two ``torch.utils.data.Dataset`` of ``(image, label)`` and a :class:`DatasetInfo`.

- ``digits``: 1,797 8x8 grey images (scikit-learn), split 80/20 with a seeded permutation.
- ``mnist``: from ``data_root``: a folder of IDX files. With the full dataset, torchvision's
  train/test; with only the test split (``t10k-*``, as ``../shared/data/mnist`` has), the first
  8,000 images train and the last 2,000 evaluate.
- ``cifar10``, ``cifar100``: torchvision's python batches in ``data_root/cifar-10-batches-py``
  or ``data_root/cifar-100-python`` (``download=True`` to fetch); training images randomly
  cropped (padding 4) and flipped, test images only normalised. The batches are pickles: they
  are read by :func:`read_cifar_batch`, which builds only dicts, lists, strings, numbers and
  numpy arrays and refuses anything else, so a crafted file in the data folder runs no code.
- ``tinyimagenet``: ``data_root/tiny-imagenet-200``: ``train/<wnid>/images/*.JPEG`` train,
  ``val/images`` labelled by ``val/val_annotations.txt`` evaluate (no download).

Missing files are a ``FileNotFoundError`` naming the path; nothing downloads unless asked.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import torch
from torch.utils.data import TensorDataset

from sparsepai.core.train import loader  # noqa: F401 (the datasets' loader)

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
    if not train_x and not download and not os.path.isdir(os.path.join(root, "MNIST", "raw")):
        raise _missing("mnist", os.path.join(root, "t10k-images-idx3-ubyte"),
                       "the IDX files (t10k-*, and train-* for the full dataset)", True)
    import torchvision

    tf = torchvision.transforms
    t = tf.Compose([tf.ToTensor(), tf.Normalize((0.1307,), (0.3081,))])
    return (torchvision.datasets.MNIST(root, train=True, transform=t, download=download),
            torchvision.datasets.MNIST(root, train=False, transform=t, download=download), info)


CIFAR = {  # name: (torchvision class, folder of the python batches, archive, classes)
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "cifar-10-python.tar.gz", 10),
    "cifar100": ("CIFAR100", "cifar-100-python", "cifar-100-python.tar.gz", 100),
}


def _missing(name, path, what, downloadable):
    hint = "or pass --download (download=True)" if downloadable else "(no download available)"
    return FileNotFoundError(f"{name}: {path} not found; put {what} there {hint}")


def _latin1_encode(text, encoding="latin1"):
    # what Python 3's protocol-2 pickles of ``bytes`` call: only the latin-1 codec is allowed
    import codecs

    if codecs.lookup(encoding).name != "iso8859-1":
        raise ValueError(f"codec {encoding!r}")
    return codecs.encode(text, encoding)


def _batch_unpickler(f, path: str):
    """A ``pickle.Unpickler`` whose ``find_class`` knows only what CIFAR batches need: numpy
    arrays (``_reconstruct``, ``ndarray``, ``dtype``) and latin-1 bytes; every other global
    (``os.system``, ``builtins.eval``, any ``__reduce__`` payload) is refused before it is
    called."""
    import pickle

    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed = {("numpy.core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
               ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in allowed:
                return allowed[(module, name)]
            raise pickle.UnpicklingError(
                f"{path}: refers to {module}.{name}, which a CIFAR batch never holds (only "
                "dicts, lists, strings, numbers and numpy arrays); not loaded")

    return Unpickler(f, encoding="latin1")


def read_cifar_batch(path: str) -> dict:
    """One of torchvision's CIFAR python batches (a pickled dict), read without running code.

    Args:
        path: a ``data_batch_N``, ``test_batch``, ``train``, ``test``, ``batches.meta`` or
            ``meta`` file.

    Returns:
        The dict (``"data"``: uint8 array (n, 3072), ``"labels"``/``"fine_labels"``, ...).

    Raises:
        ValueError: naming ``path``: not a pickled dict, truncated, or referring to anything
            but numpy arrays (a crafted file is refused before any of its code runs).
    """
    import pickle

    try:
        with open(path, "rb") as f:
            obj = _batch_unpickler(f, path).load()
    except pickle.UnpicklingError as exc:
        raise ValueError(str(exc) if str(exc).startswith(path) else
                         f"{path}: not a CIFAR batch ({exc})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ValueError(f"{path}: not a CIFAR batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return obj


def _local_cifar(cls):
    """torchvision's CIFAR class reading the python batches from ``root`` with
    :func:`read_cifar_batch` (never ``pickle.load``), without comparing their md5 sums to the
    official ones (so a re-packed or test copy in the same format loads; a download is still
    checked, on its archive). A missing file is still an error."""
    import numpy as np
    from torchvision.datasets.vision import VisionDataset

    class Local(cls):
        def __init__(self, root, train=True, transform=None, target_transform=None,
                     download=False):
            VisionDataset.__init__(self, root, transform=transform,
                                   target_transform=target_transform)
            self.train = train
            if download:
                self.download()
            if not self._check_integrity():
                raise RuntimeError("Dataset not found or corrupted. You can use download=True "
                                   "to download it")
            data, self.targets = [], []
            for file_name, _ in self.train_list if train else self.test_list:
                path = os.path.join(self.root, self.base_folder, file_name)
                entry = read_cifar_batch(path)
                try:
                    data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3072))
                    self.targets.extend(int(t) for t in entry.get("labels",
                                                                  entry.get("fine_labels")))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{path}: not a CIFAR batch ({exc})") from None
            self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
            self._load_meta()

        def _check_integrity(self):
            return all(os.path.isfile(os.path.join(self.root, self.base_folder, f))
                       for f, _ in self.train_list + self.test_list + [(self.meta["filename"], 0)])

        def _load_meta(self):
            path = os.path.join(self.root, self.base_folder, self.meta["filename"])
            self.classes = read_cifar_batch(path)[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    Local.__name__ = cls.__name__
    return Local


def _cifar(name, root, download):
    import torchvision

    if root is None:
        raise ValueError(f"{name} needs --data-root")
    cls_name, folder, archive, classes = CIFAR[name]
    if not download and not os.path.isdir(os.path.join(root, folder)):
        raise _missing(name, os.path.join(root, folder), f"the python batches ({archive} "
                       "extracted)", True)
    tf = torchvision.transforms
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    train_t = tf.Compose([tf.RandomCrop(32, padding=4), tf.RandomHorizontalFlip(), tf.ToTensor(),
                          tf.Normalize(mean, std)])
    test_t = tf.Compose([tf.ToTensor(), tf.Normalize(mean, std)])
    cls = _local_cifar(getattr(torchvision.datasets, cls_name))
    return (cls(root, train=True, transform=train_t, download=download),
            cls(root, train=False, transform=test_t, download=download),
            DatasetInfo(name, classes, 3, 32))


def _tinyimagenet(root, download):
    """Tiny-ImageNet as distributed (tiny-imagenet-200.zip extracted): ``train/<wnid>/images/``
    for training; ``val/images/`` labelled by ``val/val_annotations.txt`` for testing (the
    official test split has no labels). Class indices follow the sorted wnids of ``train/``,
    the same for both splits."""
    import torchvision

    if root is None:
        raise ValueError("tinyimagenet needs --data-root")
    if download:
        raise ValueError("tinyimagenet: no download available; extract tiny-imagenet-200.zip "
                         "into --data-root")
    base = os.path.join(root, "tiny-imagenet-200")
    for part in ("train", os.path.join("val", "images"), os.path.join("val", "val_annotations.txt")):
        if not os.path.exists(os.path.join(base, part)):
            raise _missing("tinyimagenet", os.path.join(base, part), "tiny-imagenet-200.zip "
                           "extracted", False)
    tf = torchvision.transforms
    t = tf.Compose([tf.ToTensor(), tf.Normalize((0.480, 0.448, 0.398), (0.277, 0.269, 0.282))])
    train = torchvision.datasets.ImageFolder(os.path.join(base, "train"), transform=t)
    wnids_file = os.path.join(base, "wnids.txt")
    if os.path.exists(wnids_file):
        with open(wnids_file) as f:
            wnids = {w.strip() for w in f if w.strip()}
        if wnids != set(train.classes):
            raise ValueError(f"tinyimagenet: train/ has {len(train.classes)} class folders, "
                             f"wnids.txt lists {len(wnids)} other or different wnids")
    samples = []
    with open(os.path.join(base, "val", "val_annotations.txt")) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in train.class_to_idx:
                raise ValueError(f"tinyimagenet: val image {parts[0]} has class {parts[1]!r}, "
                                 "which train/ does not have")
            samples.append((os.path.join(base, "val", "images", parts[0]),
                            train.class_to_idx[parts[1]]))
    samples.sort()
    return train, _Images(samples, t), DatasetInfo("tinyimagenet", len(train.classes), 3, 64)


class _Images(torch.utils.data.Dataset):
    """``(image, label)`` from a list of ``(path, label)``, read as RGB like ImageFolder."""

    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform
        self.targets = [c for _, c in samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[i]
        return self.transform(default_loader(path)), label


def load_dataset(name: str, data_root: str | None = None, download: bool = False, seed: int = 0):
    """``(train, test, info)`` for a dataset name (see the module docstring)."""
    if name == "digits":
        return _digits(seed)
    if name == "mnist":
        return _mnist(data_root, download)
    if name in ("cifar10", "cifar100"):
        return _cifar(name, data_root, download)
    if name == "tinyimagenet":
        return _tinyimagenet(data_root, download)
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(NAMES)}")
