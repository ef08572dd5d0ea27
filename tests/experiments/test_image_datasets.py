"""CIFAR-10/100 and Tiny-ImageNet through our loaders, on tiny synthetic copies written in tmp_path
in the exact on-disk formats of the real datasets (CIFAR's pickled python batches, as torchvision
reads them; Tiny-ImageNet's folders and val_annotations.txt). Pixels and labels are known, so
shapes, labels, normalisation and augmentation are checked against them."""

import os
import pickle  # the CIFAR test fixture only: it is CIFAR's own file format
import subprocess
import sys

import numpy as np
import pytest
import torch

from sparsepai.experiments.data import load_dataset, loader

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
TINY_MEAN, TINY_STD = (0.480, 0.448, 0.398), (0.277, 0.269, 0.282)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar(root, name, per_batch=4, n_test=6):
    """Write a CIFAR-10 (five train batches) or CIFAR-100 (one train file) copy; returns
    ``{split: (uint8 rows (n, 3072), labels)}``."""
    rng = np.random.default_rng(0)
    classes = 10 if name == "cifar10" else 100
    folder = os.path.join(root, "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    os.makedirs(folder)
    files = ([f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"])
    per_file = per_batch if name == "cifar10" else 5 * per_batch
    key = "labels" if name == "cifar10" else "fine_labels"
    out = {"train": ([], []), "test": ([], [])}
    for split, fname, n in [("train", f, per_file) for f in files] + [
            ("test", "test_batch" if name == "cifar10" else "test", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n).tolist()
        batch = {"batch_label": fname, key: labels, "data": data,
                 "filenames": [f"{fname}_{i}.png" for i in range(n)]}
        if name == "cifar100":
            batch["coarse_labels"] = [c // 5 for c in labels]
        _dump(os.path.join(folder, fname), batch)
        out[split][0].append(data)
        out[split][1].extend(labels)
    if name == "cifar10":
        _dump(os.path.join(folder, "batches.meta"),
              {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_batch})
    else:
        _dump(os.path.join(folder, "meta"), {"fine_label_names": [f"f{i}" for i in range(100)],
                                             "coarse_label_names": [f"c{i}" for i in range(20)]})
    return {k: (np.concatenate(v[0]), v[1]) for k, v in out.items()}


def _normalised(rows, mean, std):
    x = torch.tensor(rows, dtype=torch.float32).reshape(-1, 3, 32, 32) / 255
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_python_batches(tmp_path, name):
    want = make_cifar(str(tmp_path), name)
    train, test, info = load_dataset(name, str(tmp_path))
    assert (info.num_classes, info.in_channels, info.image_size) == (
        10 if name == "cifar10" else 100, 3, 32)
    assert len(train) == 20 and len(test) == 6
    # test images: exactly the stored pixels, normalised, with their labels, in file order
    xs = _normalised(want["test"][0], CIFAR_MEAN, CIFAR_STD)
    for i in range(len(test)):
        x, y = test[i]
        assert x.shape == (3, 32, 32) and y == want["test"][1][i]
        torch.testing.assert_close(x, xs[i], rtol=0, atol=1e-5)
    # train images: a 32x32 crop of the 4-padded image, maybe flipped (the augmentation)
    raw = torch.tensor(want["train"][0], dtype=torch.float32).reshape(-1, 3, 32, 32) / 255
    mean, std = torch.tensor(CIFAR_MEAN).view(3, 1, 1), torch.tensor(CIFAR_STD).view(3, 1, 1)
    torch.manual_seed(0)
    for i in (0, 7, 19):
        x, y = train[i]
        assert x.shape == (3, 32, 32) and y == want["train"][1][i]
        pixels = x * std + mean
        padded = torch.nn.functional.pad(raw[i], (4, 4, 4, 4))
        crops = [c for dy in range(9) for dx in range(9)
                 for c in (padded[:, dy:dy + 32, dx:dx + 32],
                           padded[:, dy:dy + 32, dx:dx + 32].flip(-1))]
        assert any(torch.allclose(pixels, c, atol=1e-5) for c in crops), i
    # labels of the whole train split in batch order; the loader's order follows its seed
    assert [train[i][1] for i in range(20)] == want["train"][1]
    order = lambda s: next(iter(loader(test, 6, shuffle=True, seed=s)))[1].tolist()  # noqa: E731
    assert order(3) == order(3) and sorted(order(3)) == sorted(want["test"][1])


def test_cifar_missing_files_is_a_clear_error_without_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py not found.*--download"):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar-100-python not found"):
        load_dataset("cifar100", str(tmp_path))
    make_cifar(str(tmp_path), "cifar10")
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(RuntimeError, match="not found"):
        load_dataset("cifar10", str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["cifar-10-batches-py"]  # nothing was downloaded
    with pytest.raises(ValueError, match="needs --data-root"):
        load_dataset("cifar10")


WNIDS = ["n03", "n01", "n02"]  # as in the real wnids.txt, not sorted
GREY = {"n01": 30, "n02": 120, "n03": 210}  # each class's images are one flat grey


def make_tinyimagenet(root, per_class=2, val=(("n02", 0), ("n03", 1), ("n01", 2), ("n02", 3))):
    from PIL import Image

    base = os.path.join(root, "tiny-imagenet-200")
    os.makedirs(os.path.join(base, "val", "images"))
    with open(os.path.join(base, "wnids.txt"), "w") as f:
        f.write("\n".join(WNIDS) + "\n")
    img = lambda w: Image.new("RGB", (64, 64), (GREY.get(w, 0),) * 3)  # noqa: E731
    for w in WNIDS:
        d = os.path.join(base, "train", w, "images")
        os.makedirs(d)
        for i in range(per_class):
            img(w).save(os.path.join(d, f"{w}_{i}.JPEG"), "JPEG")
        with open(os.path.join(base, "train", w, f"{w}_boxes.txt"), "w") as f:
            f.write("".join(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(per_class)))
    with open(os.path.join(base, "val", "val_annotations.txt"), "w") as f:
        for w, i in val:
            img(w).save(os.path.join(base, "val", "images", f"val_{i}.JPEG"), "JPEG")
            f.write(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63\n")
    return base


def test_tinyimagenet_folders_and_val_annotations(tmp_path):
    make_tinyimagenet(str(tmp_path))
    train, test, info = load_dataset("tinyimagenet", str(tmp_path))
    assert (info.num_classes, info.in_channels, info.image_size) == (3, 3, 64)
    assert len(train) == 6 and len(test) == 4
    index = {w: i for i, w in enumerate(sorted(WNIDS))}  # one class order for both splits
    mean, std = torch.tensor(TINY_MEAN).view(3, 1, 1), torch.tensor(TINY_STD).view(3, 1, 1)
    for split, ds in (("train", train), ("val", test)):
        labels = []
        for i in range(len(ds)):
            x, y = ds[i]
            assert x.shape == (3, 64, 64)
            # the label names the class whose grey the image is (JPEG: within 2/255)
            wnid = min(GREY, key=lambda w: abs(GREY[w] / 255 - float((x * std + mean).mean())))
            assert y == index[wnid], (split, i)
            torch.testing.assert_close(x * std + mean, torch.full_like(x, GREY[wnid] / 255),
                                       rtol=0, atol=2.5 / 255)
            labels.append(y)
        if split == "train":
            assert labels == [0, 0, 1, 1, 2, 2]  # ImageFolder: sorted wnids, then file names
    # the val labels are val_annotations.txt's, in file-name order, reproducibly
    assert [y for _, y in (test[i] for i in range(4))] == [index[w] for w in
                                                           ("n02", "n03", "n01", "n02")]
    _, again, _ = load_dataset("tinyimagenet", str(tmp_path))
    assert again.samples == test.samples


def test_tinyimagenet_bad_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.train not found"):
        load_dataset("tinyimagenet", str(tmp_path))
    with pytest.raises(ValueError, match="no download available"):
        load_dataset("tinyimagenet", str(tmp_path), download=True)
    base = make_tinyimagenet(str(tmp_path / "a"), val=(("n09", 0),))
    with pytest.raises(ValueError, match="class 'n09', which train/ does not have"):
        load_dataset("tinyimagenet", str(tmp_path / "a"))
    os.remove(os.path.join(base, "val", "val_annotations.txt"))
    with pytest.raises(FileNotFoundError, match="val_annotations.txt not found"):
        load_dataset("tinyimagenet", str(tmp_path / "a"))


def test_cli_trains_on_cifar10_from_data_root(tmp_path):
    make_cifar(str(tmp_path), "cifar10")
    p = subprocess.run([sys.executable, "-m", "sparsepai", "train", "--dataset", "cifar10",
                        "--data-root", str(tmp_path), "--model", "smallconv", "--epochs", "1",
                        "--batch-size", "8"], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout


class _Payload:
    """What a hostile CIFAR file holds: unpickling it would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("where", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_crafted_cifar_file_runs_no_code(tmp_path, where):
    make_cifar(str(tmp_path), "cifar10")
    marker = str(tmp_path / "pwned")
    path = tmp_path / "cifar-10-batches-py" / where
    _dump(path, {"data": _Payload(marker), "labels": [0], "label_names": _Payload(marker)})
    with pytest.raises(ValueError, match=f"{path}: refers to posix.mkdir"):
        load_dataset("cifar10", str(tmp_path))
    assert not os.path.exists(marker)


def test_cifar_batches_hold_only_arrays_and_builtins(tmp_path):
    from sparsepai.experiments.data import read_cifar_batch

    path = str(tmp_path / "b")
    for bad, name in [(eval, "__builtin__.eval"), (np.load, "numpy.load"),
                      (pickle.loads, "pickle.loads")]:
        with open(path, "wb") as f:
            pickle.dump({"x": bad}, f, protocol=2)
        with pytest.raises(ValueError, match=f"refers to {name}"):
            read_cifar_batch(path)
    # bytes pickled with another codec than latin-1 are refused too
    with open(path, "wb") as f:
        f.write(pickle.dumps(b"abc", protocol=2).replace(b"latin1", b"rot_13"))
    with pytest.raises(ValueError, match=f"{path}: not a CIFAR batch"):
        read_cifar_batch(path)
    with open(path, "wb") as f:
        f.write(b"\x80\x02}q")  # truncated
    with pytest.raises(ValueError, match=f"{path}: not a CIFAR batch"):
        read_cifar_batch(path)
    # the real files' form (numpy.core as Python 2's pickles name it, object arrays of str)
    want = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [3, 4],
            "names": np.array(["a", "bc"], dtype=object), "f": 1.5}
    with open(path, "wb") as f:
        f.write(pickle.dumps(want, protocol=2).replace(b"numpy._core.multiarray",
                                                       b"numpy.core.multiarray"))
    got = read_cifar_batch(path)
    assert np.array_equal(got["data"], want["data"]) and got["labels"] == [3, 4]
    assert list(got["names"]) == ["a", "bc"] and got["f"] == 1.5
